"""Every metric a finished run writes, by name, and the files that hold them (the contract
in docs/model.md): the one list a sweep's metric is checked against. metrics/eval.json
holds val/* and test/* of the scores, metrics/train.json train_minutes and the final
losses; metrics/summary.json its scalars and, under `final`, the last training metrics (as
metrics/train/metrics.json). A new metric is added here."""

from __future__ import annotations

EVAL_METRICS = ("letter_position_accuracy", "spelling_exact_match", "char_error_rate")
# The subsets every held-out split is also scored on (`val/common/spelling_exact_match`);
# spelltune.task.scoring.GROUP_LABELS labels them for reports.
EVAL_GROUPS = ("common", "mid", "rare", "canonical", "held_out", "common_canonical", "common_held_out")
# What users meet (data/vocabulary.jsonl): spelltune.task.scoring.VOCABULARY_LABELS names them.
VOCABULARY_GROUPS = ("top1k", "top1k_trained", "top1k_held_out", "top5k", "top5k_trained", "top5k_held_out",
                     "train_questions")
TRAIN_METRICS = (
    "train/loss", "train/perplexity", "train/learning_rate", "train/grad_norm",
    "time/wallclock_hours", "time/gradient_steps", "time/tokens_seen", "progress/completion_pct",
    "throughput/tokens_per_second", "throughput/steps_per_hour",
    "memory/rss_mb", "memory/gpu_allocated_mb", "memory/gpu_reserved_mb",
    "val/loss", "val/perplexity", "val/train_val_gap", "val/wallclock_hours",
)
SUMMARY_METRICS = ("best_step", "stopped_at_step", "wallclock_seconds", "seconds_to_first_step", "tokens_seen",
                   "train_minutes")
METRIC_NAMES = tuple(
    sorted(
        {f"{split}/{name}" for split in ("val", "test") for name in EVAL_METRICS}
        | {f"{split}/{group}/{name}" for split in ("val", "test") for group in EVAL_GROUPS for name in EVAL_METRICS}
        | {f"vocabulary/{group}/{name}" for group in VOCABULARY_GROUPS for name in EVAL_METRICS}
        | set(TRAIN_METRICS)
        | set(SUMMARY_METRICS)
    )
)
# The files those are read from (spelltune.store.metric); `other/file.json:key` is not checked.
METRIC_FILES = ("metrics/eval.json", "metrics/train.json", "metrics/summary.json", "metrics/train/metrics.json")

# Metrics the train stage logs at every validation evaluation (DVCLive and W&B history):
# the only ones early termination can act on, W&B's hyperband counting their logs.
TRAINING_METRICS = ("val/loss", "val/perplexity", "val/letter_position_accuracy", "val/spelling_exact_match",
                    "val/train_val_gap")
