"""What the lab hands a pipeline stage through the environment, in one place: the names
of the variables a sweep or a launcher sets and the stage reads, and the W&B run id the
lab chooses before the stage starts."""

from __future__ import annotations

import secrets
import string

# Bayesian sweeps -> the train stage's pruning reporter (spelltune.training.pruning).
OPTUNA_STORAGE = "SPELLTUNE_OPTUNA_STORAGE"  # journal file path or a database URL
STUDY = "SPELLTUNE_STUDY"  # study name (= sweep name)
TRIAL_NUMBER = "SPELLTUNE_TRIAL_NUMBER"  # the trial's number in that study
METRIC = "SPELLTUNE_METRIC"  # the key reported, e.g. val/letter_position_accuracy
PRUNER = "SPELLTUNE_PRUNER"  # JSON: {"type": "hyperband", "min_resource": 50, ...}
# Concurrent workers that share this machine's cores and GPUs (spelltune.training.devices).
WORKERS = "SPELLTUNE_WORKERS"
# DDP: the launcher claims the resume store and passes it to the processes torchrun starts.
RESUME_STORE = "SPELLTUNE_RESUME_STORE"
# W&B's own variable: train creates the run of this id, evaluate adds its scores to it.
WANDB_RUN_ID = "WANDB_RUN_ID"


def new_run_id() -> str:
    """A W&B run id (8 of [a-z0-9], like wandb.util.generate_id), chosen before W&B starts
    so that a checkpoint or a sweep trial can record it without waiting for the start."""
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
