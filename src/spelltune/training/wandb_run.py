"""The W&B run of one DVC experiment: started beside training, never in its way; offline
where no server answers; secrets scrubbed from everything it sends."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from spelltune import handoff
from spelltune.training.devices import original_repo_root

log = logging.getLogger("spelltune.training.wandb_run")

# Environment variables whose values must never reach a file the run writes.
SECRET_NAMES = {"WANDB_API_KEY", "HF_TOKEN"}
SECRET_SUFFIXES = ("_KEY", "_TOKEN", "_SECRET")


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
# W&B reports its own errors, the start that timed out included, to that same server at the
# process's exit, waiting up to 10 s per report for an answer: a closed port refuses at once,
# but a server that accepts and never replies held each stage's exit ~20 s after its start had
# given up. spelltune's runs send W&B no such reports unless WANDB_ERROR_REPORTING says so.
ERROR_REPORTING = "WANDB_ERROR_REPORTING"


def init_or_offline(wandb, **kwargs):
    """wandb.init in wandb_mode(), waiting at most INIT_TIMEOUT_SECONDS (or WANDB_INIT_TIMEOUT)
    for the server; a run that cannot start online (no network, a bad key, a server that never
    answers) starts offline instead, with one warning, so its data is kept for `wandb sync`."""
    timeout = float(os.environ.get("WANDB_INIT_TIMEOUT") or INIT_TIMEOUT_SECONDS)
    kwargs = {"project": os.environ.get("WANDB_PROJECT", "spelltune"), **kwargs,
              "settings": wandb.Settings(x_disable_stats=True, console="off", init_timeout=timeout, silent=True)}
    mode = wandb_mode()
    if mode != "offline":
        os.environ.setdefault(ERROR_REPORTING, "false")  # read by W&B's init and its wandb-core process
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


def choose_run_id(recorded: str | None = None) -> str:
    """The id of the train stage's W&B run: WANDB_RUN_ID when set (`wandb agent` and
    `spelltune sweep run` set it for each run; the evaluate stage adds its scores to that id,
    wandb_eval.training_run_id), else the id `recorded` by the checkpoint this run resumes
    from, else a new one.

    A resumed checkpoint that recorded another id than WANDB_RUN_ID: WANDB_RUN_ID wins, as it
    does in the evaluate stage, so that the run its caller named (a sweep's, which the sweep
    reads) gets the curves from the resumed step on and the final scores, in one run; the
    curves before that step stay in the recorded run, which one warning names."""
    wanted = os.environ.get(handoff.WANDB_RUN_ID)
    if wanted and recorded and wanted != recorded:
        log.warning("W&B: the checkpoint resumed logged to run %s; %s=%s wins, so this run's curves "
                    "before the resumed step are in run %s", recorded, handoff.WANDB_RUN_ID, wanted, recorded)
    return wanted or recorded or handoff.new_run_id()


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
        self._id = choose_run_id(run_id)
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
