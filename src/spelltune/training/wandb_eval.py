"""The evaluate stage's val/test scores into the W&B run of the same experiment's training.

The train stage logs its curves to a W&B run; W&B sweeps optimise a run's summary, so the
final scores must land there too, or `wandb sweep` would optimise the in-training
validation accuracy (a few dozen items) rather than what `spelltune sweep` and
`dvc exp show` rank by. The run is found by its id:

- `WANDB_RUN_ID` in the environment: `wandb agent` sets it for each run of a W&B sweep,
  `spelltune sweep run` for each trial; every stage of the `dvc exp run` inherits it (the
  train stage's wandb.init takes it as the run's id);
- else an id recorded in metrics/summary.json (`wandb_run_id`), should the train stage
  record one; today it does not, and a plain `dvc exp run` leaves W&B alone here.

Only the summary is updated (no history row), so W&B's hyperband, which counts how often
the metric was logged, still counts validation evaluations during training.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

log = logging.getLogger("spelltune.training.wandb_eval")

SUMMARY_FILE = Path("metrics/summary.json")


def training_run_id(summary_file: Path = SUMMARY_FILE) -> str | None:
    if os.environ.get("WANDB_RUN_ID"):
        return os.environ["WANDB_RUN_ID"]
    try:
        recorded = json.loads(summary_file.read_text()).get("wandb_run_id")
    except (OSError, ValueError, AttributeError):
        return None
    return recorded if isinstance(recorded, str) and recorded else None


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
        from spelltune.training.tracking import scrub, wandb_mode

        logging.getLogger("wandb").propagate = False
        root = Path(os.environ.get("WANDB_DIR") or original_repo_root())
        run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "spelltune"),
            id=run_id,
            resume="allow",
            dir=str(root),
            mode=wandb_mode(),
            settings=wandb.Settings(x_disable_stats=True, console="off"),
        )
        run.summary.update(scrub(dict(metrics)))
        run.finish()
        log.info("W&B run %s: summary has the eval metrics (%s)", run_id, ", ".join(sorted(metrics)))
        return run_id
    except Exception as exc:  # noqa: BLE001 - a tracker failure must not fail the evaluation
        log.warning("W&B summary of run %s failed, going on without it: %s", run_id, str(exc).splitlines()[:1])
        return None
