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
# The train stage's final losses and minutes (spelltune compare reads them; an output).
TRAIN_METRICS_FILE = METRICS_DIR / "train.json"
# The only DVC metrics, the columns of `dvc exp show` (the report stage writes them).
HEADLINE_FILE = METRICS_DIR / "headline.json"
# The validate stage's marker, which every stage depends on: run state, so git-ignored. Its
# path sorts before every other dependency, and `dvc exp show` never folds the first
# dependency column: as this one never changes, the changing ones fold into one `…`.
PARAMS_OK = Path(".spelltune/params.ok")
# Which `dvc exp run` holds this workspace, and the params.yaml it validated (spelltune/workspace.py).
PIPELINE_CLAIM = Path(".spelltune/pipeline.json")

# The data splits (data/<split>.jsonl); the held-out ones name their metrics val/..., test/....
SPLITS = ("train", "validation", "test")
METRIC_PREFIX = {"validation": "val", "test": "test"}
SPLIT_OF_PREFIX = {prefix: split for split, prefix in METRIC_PREFIX.items()}
