"""Next configs worth running, as ready-to-run `dvc exp run --queue -S ...` lines."""

from __future__ import annotations

import math
import shlex

import pandas as pd

from spelltune.experiments.leaderboard import ranked
from spelltune.experiments.runs import DEFAULT_METRIC, LOG_SCALE, Runs, short

# Params not worth tuning against a metric: they change the test items, or the bookkeeping
# (logging, checkpoints, stopping guards, where it runs) and not the model.
NOT_TUNED_PREFIXES = ("data.", "eval.", "model.source", "model.backend", "train.seed", "train.threads",
                      "train.processes", "train.log_every", "train.eval_every", "train.val_loss_items",
                      "train.val_generate_items", "train.save_every", "train.keep_last", "train.early_stop_",
                      "train.grad_norm_limit")


DEFAULT_KNOBS = ("train.lr", "lora.r")


def _two_digits(value: float, integer: bool) -> float | int:
    if integer:
        return round(value)
    return float(f"{value:.2g}")


def _neighbours(key: str, value, tried: list) -> list[tuple[float, str]]:
    """Values just below and above `value`: halfway to the nearest tried neighbour, or one
    step past the edge of what was tried (x2 / /2 on a log scale)."""
    integer = all(float(v).is_integer() for v in [value, *tried]) and not isinstance(value, float)
    log = key in LOG_SCALE and all(v > 0 for v in [value, *tried])
    spread = (max(tried) - min(tried)) / max(len(tried) - 1, 1) if len(tried) > 1 else (abs(value) or 0.1) / 2
    out = []
    for side, others in (("below", [v for v in tried if v < value]), ("above", [v for v in tried if v > value])):
        if others:
            near = max(others) if side == "below" else min(others)
            mid = math.sqrt(near * value) if log else (near + value) / 2
            low, high = sorted((near, value))
            out.append((_two_digits(mid, integer), f"between {low:g} and {high:g}{' (log scale)' if log else ''}"))
        else:
            step = (
                (value / 2 if side == "below" else value * 2)
                if log
                else (value - spread if side == "below" else value + spread)
            )
            out.append((_two_digits(step, integer), f"{'below' if side == 'below' else 'above'} the tried range"))
    return [(v, why) for v, why in out if v != value and v not in tried]


def _set_arg(key: str, value) -> str:
    """`key=value` as `-S` takes it (YAML), quoted for the shell where needed."""
    value = value.item() if hasattr(value, "item") else value
    if isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, float):
        text = f"{value:g}"
    else:
        text = str(value)
    return shlex.quote(f"{key}={text}")


def _valid(params: dict) -> bool:
    """Whether the params schema accepts this flat config."""
    import yaml

    from spelltune.params import ParamsError, parse

    nested: dict = {}
    for key, value in params.items():
        node = nested
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        # Lists and quoted blanks are in the YAML form runs.table shows them in (runs._param_value).
        node[leaf] = yaml.safe_load(value) if isinstance(value, str) and value.startswith(("[", "'")) else value
    try:
        parse(nested)
    except ParamsError:
        return False
    return True


def recommend(runs: Runs, metric: str = DEFAULT_METRIC, ascending: bool | None = None, limit: int = 8) -> list[str]:
    """Next configs worth running: the best config with one tuned param moved to a neighbour
    value not tried yet; plus more seeds of the best when it has none. Each is a ready-to-run
    `dvc exp run --queue -S ...` line with a trailing `# why` comment."""
    metric = runs.resolve_metric(metric)
    table = ranked(runs, metric, ascending)
    if table.empty:
        return []
    best_name = table.index[0]
    best = table.iloc[0]
    tuned = [p for p in runs.varying() if not p.startswith(NOT_TUNED_PREFIXES)]
    numeric = [p for p in tuned if pd.api.types.is_numeric_dtype(table[p]) and not pd.api.types.is_bool_dtype(table[p])]
    knobs = numeric or [k for k in DEFAULT_KNOBS if k in runs.params]
    # Compare configs without the seed: a config already run with another seed counts as run.
    keys = [p for p in runs.params if p != "train.seed"]
    seen = {tuple(str(v) for v in row) for row in table[keys].itertuples(index=False)}

    tied = [n for n in table.index[1:] if table.loc[n, metric] == best[metric]]
    lines = [f"# around the best, {best_name} ({short(metric)} = {best[metric]:.4g}"
             + (f"; tied with {', '.join(tied)}, so 'best' is just the earliest" if tied else "") + "):"]
    # Every tuned param that varies is pinned to the best's value: the line does not depend
    # on what params.yaml holds now.
    candidates = [(key, value, why) for key in knobs
                  for value, why in _neighbours(key, best[key], sorted(set(table[key].dropna().tolist())))]
    for key, value, why in candidates:
        config = {**best[runs.params].to_dict(), key: value}
        if tuple(str(config[k]) for k in keys) in seen or not _valid(config):
            continue
        args = [f"-S {_set_arg(k, config[k])}" for k in dict.fromkeys([*tuned, key])]
        lines.append(f"dvc exp run --queue {' '.join(args)}   # {key}: {why}")
        if len(lines) > limit:
            break
    same_config = (table[keys].map(str) == best[keys].map(str)).all(axis=1).sum()
    if same_config < 2 and "train.seed" in runs.params:
        used = set(table["train.seed"].dropna().astype(int))
        seeds = [s for s in range(1, 100) if s not in used][:2]
        args = " ".join(f"-S {_set_arg(k, best[k])}" for k in tuned)
        lines.append(
            "# the best again with other seeds, to see whether its lead holds (then `spelltune significance`):"
        )
        lines += [f"dvc exp run --queue {args} -S train.seed={s}".replace("  ", " ") for s in seeds]
    return lines
