"""Training metrics under one contract (names in docs/model.md), logged through DVCLive
and Weights & Biases with the optimizer step as the step, and the run's summary JSON."""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from pathlib import Path

from transformers import TrainerCallback

from spelltune import handoff
from spelltune.training.devices import original_repo_root

log = logging.getLogger("spelltune.training.tracking")

# Environment variables whose values must never reach a file the run writes.
SECRET_NAMES = {"WANDB_API_KEY", "HF_TOKEN"}
SECRET_SUFFIXES = ("_KEY", "_TOKEN", "_SECRET")


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


def secret_values() -> list[str]:
    return [
        value
        for name, value in os.environ.items()
        if (name in SECRET_NAMES or name.upper().endswith(SECRET_SUFFIXES)) and len(value) >= 4
    ]


def scrub(value, secrets: list[str] | None = None):
    """`value` (nested dicts, lists, strings) with every secret's value replaced by ***."""
    secrets = secret_values() if secrets is None else secrets
    if isinstance(value, dict):
        return {k: scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v, secrets) for v in value]
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, "***")
    return value


def wandb_mode() -> str:
    """WANDB_MODE when set; otherwise online if the user is logged in, else offline."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        import netrc

        logged_in = netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        logged_in = False
    return "online" if logged_in else "offline"


def wandb_group() -> str | None:
    """WANDB_RUN_GROUP when set (`spelltune sweep` sets it to the sweep's name); else, for a
    DVC experiment, the commit it branches from, so a plain `dvc exp run --queue` grid lands
    in one group."""
    if os.environ.get("WANDB_RUN_GROUP"):
        return os.environ["WANDB_RUN_GROUP"]
    baseline = os.environ.get("DVC_EXP_BASELINE_REV")
    return f"baseline-{baseline[:7]}" if baseline else None


def skip_unstaged_launch_inputs(wandb) -> None:
    """wandb.init imports W&B's whole Launch package (docs/results.md) only to apply job
    inputs that code can stage solely through that package: unless it is imported already,
    there is nothing to apply."""
    import sys

    run_class = wandb.sdk.wandb_run.Run
    detect = getattr(run_class, "_detect_and_apply_job_inputs", None)
    if detect is None or getattr(detect, "spelltune", False):
        return

    def detect_if_staged(run) -> None:
        if "wandb.sdk.launch" in sys.modules:
            detect(run)

    detect_if_staged.spelltune = True
    run_class._detect_and_apply_job_inputs = detect_if_staged


# W&B waits up to init_timeout (its default: 90 s) for a server it cannot reach; then this
# run logs offline instead, beside training (never in its way). WANDB_INIT_TIMEOUT, when set, wins.
INIT_TIMEOUT_SECONDS = 3.0


def init_or_offline(wandb, **kwargs):
    """wandb.init in wandb_mode(), waiting at most INIT_TIMEOUT_SECONDS (or WANDB_INIT_TIMEOUT)
    for the server; a run that cannot start online (no network, a bad key) starts offline
    instead, with one warning, so its data is kept for `wandb sync`."""
    timeout = float(os.environ.get("WANDB_INIT_TIMEOUT") or INIT_TIMEOUT_SECONDS)
    kwargs = {"project": os.environ.get("WANDB_PROJECT", "spelltune"), **kwargs,
              "settings": wandb.Settings(x_disable_stats=True, console="off", init_timeout=timeout, silent=True)}
    mode = wandb_mode()
    try:
        return wandb.init(mode=mode, **kwargs)
    except Exception as exc:  # noqa: BLE001 - no server, bad key: keep the run's data offline
        if mode == "offline":
            raise
        wandb.teardown()  # else W&B's service still holds the run id it failed to start
        run = wandb.init(mode="offline", **kwargs)
        log.warning("W&B could not start %s (%s); logging offline to %s instead (`wandb sync` it later)",
                    mode, _first_line(exc), Path(run.dir).parent)
        return run


class WandbRun:
    """One W&B run per DVC experiment. A tracker that fails (import error, bad key, no
    network, unwritable directory) costs one warning: the run goes on without it. One
    that cannot reach its server (online mode, no network or a bad key) logs offline
    instead, after at most INIT_TIMEOUT_SECONDS, also with one warning.

    Training never waits for W&B's start: metrics logged before it is done are kept and
    handed over once it is (or dropped if it failed), so its time never enters the
    wall-clock and throughput the run logs."""

    def __init__(self, name: str, config: dict, tags: list[str], group: str | None, run_id: str | None = None):
        self.run = None
        self.failed = False
        self._id = run_id or handoff.new_run_id()
        self._lock = threading.Lock()
        self._pending: list[tuple[dict, int]] | None = []  # (metrics, step) logged during the start; None after
        # W&B's own log records go to its debug.log, not through our handlers to stderr.
        logging.getLogger("wandb").propagate = False
        # Its start (imports and its wandb-core process) runs beside the model's
        # loading and the first steps; finish() waits for it, and so does the interpreter's
        # exit (not a daemon: a run that fails early must not exit halfway through wandb.init).
        self._starting = threading.Thread(target=self._start, args=(name, config, tags, group, run_id is not None),
                                          name="wandb-start")
        self._starting.start()

    def _start(self, name: str, config: dict, tags: list[str], group: str | None, resuming: bool) -> None:
        try:
            import wandb

            try:
                skip_unstaged_launch_inputs(wandb)
            except Exception:  # noqa: BLE001 - a speed-up only: W&B works without it
                log.debug("W&B: could not skip its Launch inputs", exc_info=True)

            root = Path(os.environ.get("WANDB_DIR") or original_repo_root())
            root.mkdir(parents=True, exist_ok=True)  # W&B itself would fall back to a temp dir
            if not os.access(root, os.W_OK):
                raise PermissionError(f"{root} is not writable")
            self.run = init_or_offline(wandb, name=name, id=self._id, resume="allow" if resuming else None,
                                       config=scrub(config), tags=tags, group=group, job_type="train", dir=str(root))
            log.info("W&B run %s (%s) in %s", name, self.run.settings.mode, self.run.dir)
        except Exception as exc:  # noqa: BLE001 - any tracker failure must not stop training
            self._fail("start", exc)
        finally:
            with self._lock:  # hand over what was logged meanwhile, in order
                pending, self._pending = self._pending or [], None
                for metrics, step in pending:
                    self._log_now(metrics, step)

    @property
    def id(self) -> str | None:
        """The run's id (known before W&B has started); None once W&B failed."""
        return None if self.failed else self._id

    def _fail(self, what: str, exc: Exception) -> None:
        log.warning("W&B %s failed, going on without it: %s", what, _first_line(exc))
        self.run = None
        self.failed = True

    def _log_now(self, metrics: dict[str, float], step: int) -> None:
        if self.run is not None:
            try:
                self.run.log(metrics, step=step)
            except Exception as exc:  # noqa: BLE001
                self._fail("log", exc)

    def log(self, metrics: dict[str, float], step: int) -> None:
        with self._lock:
            if self._pending is not None:  # still starting: never wait for it here
                self._pending.append((dict(metrics), step))
                return
        self._log_now(metrics, step)

    def finish(self, summary: dict) -> None:
        self._starting.join()
        if self.run is not None:
            try:
                self.run.summary.update(scrub(summary))
                self.run.finish()
            except Exception as exc:  # noqa: BLE001
                self._fail("finish", exc)


def _first_line(exc: Exception) -> str:
    return scrub(str(exc).splitlines()[0] if str(exc) else repr(exc))


def flat_summary(summary: dict) -> dict:
    """summary.json flattened for W&B: best/<metric>, final/<metric>, and the scalars."""
    flat = {k: v for k, v in summary.items() if not isinstance(v, dict)}
    for section in ("final", "best", "parameters", "backend", "worker"):
        flat.update({f"{section}/{k}": v for k, v in summary.get(section, {}).items()})
    return flat


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
