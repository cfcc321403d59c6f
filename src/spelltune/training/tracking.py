"""Training metrics under one contract (names in docs/model.md), logged through DVCLive
and Weights & Biases (training/wandb_run.py) with the optimizer step as the step, and the
run's summary JSON."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

from transformers import TrainerCallback

from spelltune.training.wandb_run import WandbRun


def perplexity(loss: float) -> float:
    return math.exp(min(loss, 50.0))  # capped: a diverged loss must not overflow the log


def memory_metrics() -> dict[str, float]:
    import psutil
    import torch

    metrics = {"memory/rss_mb": psutil.Process().memory_info().rss / 2**20}
    if torch.cuda.is_available():
        metrics["memory/gpu_allocated_mb"] = torch.cuda.memory_allocated() / 2**20
        metrics["memory/gpu_reserved_mb"] = torch.cuda.memory_reserved() / 2**20
    return metrics


def seconds_since_process_start() -> float:
    """From the kernel's start time of this process (clock ticks since boot). psutil's
    create_time adds the boot time, which /proc/stat rounds to the second: up to 1 s off."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])  # field 22: starttime
        return time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):  # not Linux
        import psutil

        return time.time() - psutil.Process().create_time()


class MetricsCallback(TrainerCallback):
    """Turns the Trainer's log events into the project's metrics.

    Every `train.log_every` steps: train/*, time/*, progress/*, throughput/*, memory/*.
    At every evaluation: val/loss, val/perplexity, val/letter_position_accuracy and
    val/spelling_exact_match (greedy answers), val/eval_time_seconds, val/train_val_gap
    (val/loss − last train/loss) and val/wallclock_hours. The best evaluation is the one
    with the best `best_metric` (the early-stopping metric). A resumed run passes the
    state saved in its checkpoint, so that wall-clock time and the best carry on.
    """

    def __init__(
        self, live, max_steps: int, best_metric: str, wandb_run: WandbRun | None = None, restored: dict | None = None
    ):
        from spelltune.params import EARLY_STOP_METRICS

        self.live = live
        self.max_steps = max_steps
        self.best_metric = best_metric
        self.maximize = EARLY_STOP_METRICS[best_metric] == "max"
        self.wandb_run = wandb_run
        restored = restored or {}
        self.seconds_before = restored.get("wallclock_seconds", 0.0)  # spent before a resume
        self.last: dict[str, float] = restored.get("last", {})
        self.best: dict[str, float] = restored.get("best", {})
        self.best_step: int | None = restored.get("best_step")
        self.start = time.perf_counter()
        self.seconds_to_first_step: float | None = None

    def seconds(self) -> float:
        return self.seconds_before + time.perf_counter() - self.start

    def state(self) -> dict:
        return {"wallclock_seconds": self.seconds(), "last": self.last, "best": self.best, "best_step": self.best_step}

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()

    def on_step_begin(self, args, state, control, **kwargs):
        if self.seconds_to_first_step is None:  # start-up cost: process start to the first step
            self.seconds_to_first_step = seconds_since_process_start()

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        metrics: dict[str, float] = {}
        if "loss" in logs:
            metrics.update(self._train(logs))
            metrics.update(self._progress(state))
        if "eval_loss" in logs:
            metrics.update(self._val(logs))
        if metrics:
            self._log(state.global_step, metrics)

    def _train(self, logs: dict) -> dict[str, float]:
        return {
            "train/loss": logs["loss"],
            "train/perplexity": perplexity(logs["loss"]),
            "train/learning_rate": logs.get("learning_rate"),
            "train/grad_norm": logs.get("grad_norm"),
        }

    def _progress(self, state) -> dict[str, float]:
        seconds = self.seconds()
        return {
            "time/wallclock_hours": seconds / 3600,
            "time/gradient_steps": state.global_step,
            "time/tokens_seen": state.num_input_tokens_seen,
            "progress/completion_pct": 100.0 * state.global_step / self.max_steps,
            "throughput/tokens_per_second": state.num_input_tokens_seen / seconds,
            "throughput/steps_per_hour": state.global_step / seconds * 3600,
            **memory_metrics(),
        }

    def _val(self, logs: dict) -> dict[str, float]:
        metrics = {
            "val/loss": logs["eval_loss"],
            "val/perplexity": perplexity(logs["eval_loss"]),
            "val/letter_position_accuracy": logs.get("eval_letter_position_accuracy"),
            "val/spelling_exact_match": logs.get("eval_spelling_exact_match"),
            "val/eval_time_seconds": logs.get("eval_runtime"),
            # The x axis of the validation curves against time (dvc.yaml joins files row by row).
            "val/wallclock_hours": self.seconds() / 3600,
        }
        if "train/loss" in self.last:
            metrics["val/train_val_gap"] = metrics["val/loss"] - self.last["train/loss"]
        return metrics

    def _log(self, step: int, metrics: dict[str, float]) -> None:
        metrics = {name: float(value) for name, value in metrics.items() if value is not None}
        self.live.step = step
        for name, value in metrics.items():
            self.live.log_metric(name, value, timestamp=True)
        self.live.make_summary()
        if self.wandb_run is not None:
            self.wandb_run.log(metrics, step)
        self.last.update(metrics)
        value = metrics.get(self.best_metric)
        if value is not None:
            best = self.best.get(self.best_metric)
            if best is None or (value > best if self.maximize else value < best):
                self.best = {k: v for k, v in metrics.items() if k.startswith("val/")}
                self.best_step = step

    def summary(self, **extra) -> dict:
        return {
            "final": self.last,
            "best": self.best,
            "best_step": self.best_step,
            "wallclock_seconds": self.seconds(),
            "seconds_to_first_step": self.seconds_to_first_step,
            **extra,
        }


class PruneCallback(TrainerCallback):
    """Early termination by a sweep: after each evaluation, ask the sweep's reporter."""

    def __init__(self, reporter):
        self.reporter = reporter
        self.pruned = False

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        values = {f"val/{k.removeprefix('eval_')}": v for k, v in (metrics or {}).items() if k.startswith("eval_")}
        if self.reporter.should_prune(state.global_step, values):
            self.pruned = True
            control.should_training_stop = True
