"""The evaluate stage's val/test scores into the W&B run of the same experiment's training.

The train stage logs its curves to a W&B run; W&B sweeps optimise a run's summary, so the
final scores must land there too, or `wandb sweep` would optimise the in-training
validation accuracy (a few dozen items) rather than what `spelltune sweep` and
`dvc exp show` rank by. The run is found by its id:

- `WANDB_RUN_ID` in the environment: `wandb agent` sets it for each run of a W&B sweep,
  `spelltune sweep run` for each trial; every stage of the `dvc exp run` inherits it (the
  train stage's wandb.init takes it as the run's id);
- else the id the train stage recorded under its params fingerprint in
  `<repo>/.spelltune/wandb-runs/` (outside DVC's outputs, so that reruns stay
  bit-identical): every plain or queued `dvc exp run`; none when W&B failed in training.

Like training's, this run logs offline when it cannot reach the server within
wandb_run.INIT_TIMEOUT_SECONDS (`wandb sync` merges both into one run).

Only the summary is updated (no history row), so W&B's hyperband, which counts how often
the metric was logged, still counts validation evaluations during training.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from spelltune import handoff

log = logging.getLogger("spelltune.training.wandb_eval")

SUMMARY_FILE = Path("metrics/summary.json")


def _recorded(fingerprint: str) -> Path:
    from spelltune.training.devices import original_repo_root

    return Path(original_repo_root()) / ".spelltune" / "wandb-runs" / fingerprint


def record_run_id(fingerprint: str, run_id: str | None) -> None:
    """The train stage's W&B run, for the evaluate stage of the same experiment."""
    path = _recorded(fingerprint)
    if run_id is None:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(run_id + "\n")


def training_run_id(summary_file: Path = SUMMARY_FILE) -> str | None:
    if os.environ.get(handoff.WANDB_RUN_ID):
        return os.environ[handoff.WANDB_RUN_ID]
    try:
        fingerprint = json.loads(summary_file.read_text())["params_fingerprint"]
        return _recorded(fingerprint).read_text().strip() or None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def add_to_training_run(metrics: dict[str, float], summary_file: Path = SUMMARY_FILE) -> str | None:
    """Write `metrics` into the summary of the training's W&B run; its id, or None when
    there is no such run or W&B fails (one warning: evaluation goes on without it)."""
    run_id = training_run_id(summary_file)
    if run_id is None:
        log.info("no W&B run recorded by the train stage: the eval metrics stay in metrics/ only")
        return None
    if os.environ.get("WANDB_MODE") == "disabled":
        return None
    try:
        import wandb

        from spelltune.training.devices import original_repo_root
        from spelltune.training.wandb_run import init_or_offline, scrub

        logging.getLogger("wandb").propagate = False
        root = Path(os.environ.get("WANDB_DIR") or original_repo_root())
        run = init_or_offline(wandb, id=run_id, resume="allow", job_type="train", dir=str(root))
        run.summary.update(scrub(dict(metrics)))
        run.finish()
        log.info("W&B run %s: summary has the eval metrics (%s)", run_id, ", ".join(sorted(metrics)))
        return run_id
    except Exception as exc:  # noqa: BLE001 - a tracker failure must not fail the evaluation
        log.warning("W&B summary of run %s failed, going on without it: %s", run_id, str(exc).splitlines()[:1])
        return None
