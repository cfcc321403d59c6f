"""The files stages hand to each other; dvc.yaml declares them as outs and deps.
Kept here, light, so that no stage imports another stage's module."""

from pathlib import Path

BASE_MODEL_DIR = Path("data/base_model")
CHECKPOINT_DIR = Path("checkpoints")
ADAPTER_DIR = CHECKPOINT_DIR / "adapter"
METRICS_DIR = Path("metrics")
# The train stage's DVCLive directory and its curves, one TSV per metric.
LIVE_DIR = METRICS_DIR / "train"
CURVES_DIR = LIVE_DIR / "plots" / "metrics"
PLOTS_DIR = Path("plots")
# Run facts (timings, fingerprint, backend, best/final blocks): an output, not a DVC metric.
SUMMARY_FILE = METRICS_DIR / "summary.json"
# The train stage's few headline numbers: a DVC metric, a column of `dvc exp show`.
TRAIN_METRICS_FILE = METRICS_DIR / "train.json"

# The data splits (data/<split>.jsonl); the held-out ones name their metrics val/..., test/....
SPLITS = ("train", "validation", "test")
METRIC_PREFIX = {"validation": "val", "test": "test"}
SPLIT_OF_PREFIX = {prefix: split for split, prefix in METRIC_PREFIX.items()}
