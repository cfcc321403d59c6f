"""The leaderboard: finished experiments ranked by one metric, the headline metrics beside it."""

from __future__ import annotations

import pandas as pd

from spelltune.experiments.runs import DEFAULT_METRIC, EVAL_FILE, Runs, short


# Shown next to the chosen metric in the leaderboard when present: validation first, then
# what users meet (trained words included, so never what chooses), then the test split's
# numbers, renamed "(final check)". Each split's common words and held-out wordings follow
# its overall numbers.
def _split_headline(split: str) -> list[str]:
    return [f"{EVAL_FILE}:{split}/{group}{k}" for group, metrics in (
        ("", ("spelling_exact_match", "letter_position_accuracy", "char_error_rate")),
        ("common/", ("spelling_exact_match", "letter_position_accuracy")),
        ("held_out/", ("spelling_exact_match", "letter_position_accuracy")),
    ) for k in metrics]


VOCABULARY = [f"{EVAL_FILE}:vocabulary/{group}/spelling_exact_match" for group in ("top1k", "top1k_trained")]
HEADLINE = _split_headline("val") + VOCABULARY + _split_headline("test")


FINAL_CHECK = " (final check)"
INCLUDES_TRAINED = " (trained words incl.)"


LOWER_IS_BETTER = ("loss", "error_rate", "perplexity", "time", "seconds", "hours", "rss_mb", "gap")


def lower_is_better(metric: str) -> bool:
    return any(word in metric.split(":")[-1] for word in LOWER_IS_BETTER)


def ranked(runs: Runs, metric: str, ascending: bool | None = None) -> pd.DataFrame:
    """The experiments that have `metric`, best first (ties: the earlier experiment first)."""
    if ascending is None:
        ascending = lower_is_better(metric)
    table = runs.table[runs.table[metric].notna()]
    return table.sort_values([metric, "created"], ascending=[ascending, True], kind="stable", na_position="last")


def leaderboard(runs: Runs, metric: str = DEFAULT_METRIC, ascending: bool | None = None) -> pd.DataFrame:
    """Rank, experiment, the chosen metric and the headline metrics, then the params that vary."""
    metric = runs.resolve_metric(metric)
    table = ranked(runs, metric, ascending)
    metrics = [metric] + [m for m in HEADLINE if m in runs.metrics and m != metric]
    board = table[["rev", *metrics, *runs.varying()]].copy()
    board["rev"] = board["rev"].map(lambda rev: "" if rev == "workspace" else rev[:7])
    labels = {m: short(m) + (FINAL_CHECK if m != metric and short(m).startswith("test/") else "")
              + (INCLUDES_TRAINED if m in VOCABULARY else "") for m in metrics}
    board = board.rename(columns=labels).rename_axis("experiment").reset_index()
    board.insert(0, "rank", range(1, len(board) + 1))
    return board
