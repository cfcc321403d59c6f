"""Training metrics under one contract (names in docs/model.md), logged through DVCLive
with the optimizer step as the step, and the run's summary JSON."""

from __future__ import annotations

import math
import time

from transformers import TrainerCallback


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


class MetricsCallback(TrainerCallback):
    """Turns the Trainer's log events into the project's metrics.

    Every `train.log_every` steps: train/*, time/*, progress/*, throughput/*, memory/*.
    At every evaluation: val/loss and val/perplexity, and, when `val_items` are given,
    val/letter_position_accuracy and val/spelling_exact_match from greedy answers,
    val/eval_time_seconds and val/train_val_gap (val/loss − last train/loss).
    """

    def __init__(self, live, max_steps: int, val_items: list[dict], answer):
        self.live = live
        self.max_steps = max_steps
        self.val_items = val_items
        self.answer = answer  # (model, items) -> replies
        self.start = time.perf_counter()
        self.last: dict[str, float] = {}
        self.best: dict[str, float] = {}
        self.best_step: int | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()

    def on_log(self, args, state, control, logs=None, model=None, **kwargs):
        logs = logs or {}
        metrics: dict[str, float] = {}
        if "loss" in logs:
            metrics.update(self._train(logs))
            metrics.update(self._progress(state))
        if "eval_loss" in logs:
            metrics.update(self._val(logs, model))
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
        seconds = time.perf_counter() - self.start
        return {
            "time/wallclock_hours": seconds / 3600,
            "time/gradient_steps": state.global_step,
            "time/tokens_seen": state.num_input_tokens_seen,
            "progress/completion_pct": 100.0 * state.global_step / self.max_steps,
            "throughput/tokens_per_second": state.num_input_tokens_seen / seconds,
            "throughput/steps_per_hour": state.global_step / seconds * 3600,
            **memory_metrics(),
        }

    def _val(self, logs: dict, model) -> dict[str, float]:
        from spelltune.metrics import score_item, summarize

        metrics = {"val/loss": logs["eval_loss"], "val/perplexity": perplexity(logs["eval_loss"])}
        seconds = logs.get("eval_runtime", 0.0)
        if self.val_items and model is not None:
            start = time.perf_counter()
            replies = self.answer(model, self.val_items)
            seconds += time.perf_counter() - start
            scores = summarize([{**it, **score_item(it, r)} for it, r in zip(self.val_items, replies)])
            for name in ("letter_position_accuracy", "spelling_exact_match"):
                if scores[name] is not None:
                    metrics[f"val/{name}"] = scores[name]
        metrics["val/eval_time_seconds"] = seconds
        if "train/loss" in self.last:
            metrics["val/train_val_gap"] = metrics["val/loss"] - self.last["train/loss"]
        return metrics

    def _log(self, step: int, metrics: dict[str, float]) -> None:
        self.live.step = step
        for name, value in metrics.items():
            if value is not None:
                self.live.log_metric(name, float(value), timestamp=True)
                self.last[name] = float(value)
        self.live.make_summary()
        if "val/loss" in metrics and ("val/loss" not in self.best or metrics["val/loss"] < self.best["val/loss"]):
            self.best = {k: float(v) for k, v in metrics.items() if k.startswith("val/") and v is not None}
            self.best_step = step

    def summary(self, **extra) -> dict:
        return {
            "final": self.last,
            "best": self.best,
            "best_step": self.best_step,
            "wallclock_seconds": time.perf_counter() - self.start,
            **extra,
        }
