"""The files stages hand to each other; dvc.yaml declares them as outs and deps.
Kept here, light, so that no stage imports another stage's module."""

from pathlib import Path

BASE_MODEL_DIR = Path("data/base_model")
CHECKPOINT_DIR = Path("checkpoints")
ADAPTER_DIR = CHECKPOINT_DIR / "adapter"
METRICS_DIR = Path("metrics")
SUMMARY_FILE = METRICS_DIR / "summary.json"
