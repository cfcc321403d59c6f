"""Compare the experiments of a repository: what DVC's table does not answer.

    runs = load_runs(".")                         # every finished experiment, from `dvc exp show --json`
    board = leaderboard(runs, "val/spelling_exact_match")
    write_report(runs, metric, out="compare")     # leaderboard.csv, leaderboard.md, compare.html

Each finished experiment is a git commit (an exp ref, a baseline commit, or the
workspace), and the pipeline git-tracks its small outputs (metrics/*.json, the per-item
predictions, the DVCLive curves), so everything is read back from git by revision.
The statistics (significance, seeds, importance, errors) live in `spelltune.experiments.significance`.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

# Validation chooses, test confirms: every ranking, recommendation and significance test
# defaults to a val/ metric; test/ columns are shown as the final check only.
DEFAULT_METRIC = "metrics/eval.json:val/spelling_exact_match"
EVAL_FILE = "metrics/eval.json"
CURVES_DIR = "metrics/train/plots/metrics"
# Shown next to the chosen metric in the leaderboard when present: validation first, then
# the test split's numbers, renamed "(final check)".
HEADLINE = [f"{EVAL_FILE}:{split}/{k}" for split in ("val", "test") for k in (
    "spelling_exact_match", "letter_position_accuracy", "char_error_rate",
)]
FINAL_CHECK = " (final check)"
LOWER_IS_BETTER = ("loss", "error_rate", "perplexity", "time", "seconds", "hours", "rss_mb", "gap")
# Params whose useful values span orders of magnitude: neighbours are proposed on a log scale.
LOG_SCALE = {"train.lr", "lora.r", "lora.alpha", "train.batch_size", "train.grad_accum_steps", "train.max_steps"}
# Params not worth tuning against a metric (they change the test items, the logging, or nothing).
NOT_TUNED_PREFIXES = ("data.", "eval.", "model.source", "train.seed", "train.threads", "train.log_every",
                      "train.eval_every", "train.val_loss_items", "train.val_generate_items")
DEFAULT_KNOBS = ("train.lr", "lora.r")


class CompareError(ValueError):
    """A bad experiment name or metric, phrased as the one line the user sees."""


# ---------------------------------------------------------------------------- loading


def _flatten(data: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _param_value(value):
    """Lists (target_modules, tasks) as their YAML flow form, the way `-S` takes them;
    blank strings quoted (data.spelling_separator: ' '), or they vanish from tables and plots."""
    import yaml

    if isinstance(value, list):
        return yaml.safe_dump(value, default_flow_style=True).strip()
    if isinstance(value, str) and not value.strip():
        return repr(value)
    return value


@dataclass
class Runs:
    """The finished experiments of a repository.

    `table` has one row per experiment (index: its name) with the columns `rev`, `kind`
    (workspace, baseline, experiment) and `created`, then every param (`train.lr`, ...) and
    every metric (`metrics/eval.json:test/letter_position_accuracy`, ...)."""

    repo: Path
    table: pd.DataFrame
    params: list[str]
    metrics: list[str]
    pending: dict[str, str] = field(default_factory=dict)  # queued/running/failed: name -> state

    @property
    def names(self) -> list[str]:
        return list(self.table.index)

    def varying(self) -> list[str]:
        """Params with more than one value across the experiments."""
        return [p for p in self.params if self.table[p].map(str).nunique() > 1]

    def resolve(self, name: str) -> str:
        """An experiment by name, baseline branch name or (prefix of) git revision."""
        if name in self.table.index:
            return name
        hits = [n for n, rev in self.table["rev"].items() if len(name) >= 4 and str(rev).startswith(name)]
        if len(hits) == 1:
            return hits[0]
        if name in self.pending:
            raise CompareError(f"experiment {name!r} has no results ({self.pending[name]})")
        raise CompareError(f"unknown experiment {name!r}; known: {', '.join(self.names) or '(none)'}")

    def resolve_metric(self, name: str) -> str:
        """`metrics/eval.json:test/x`, or just `test/x` (eval.json first, else the one file that has it)."""
        if name in self.metrics:
            return name
        hits = [m for m in self.metrics if m.split(":", 1)[1] == name or m.endswith(name)]
        preferred = [m for m in hits if m.startswith(EVAL_FILE + ":")]
        if len(preferred) == 1:
            return preferred[0]
        if len(hits) == 1:
            return hits[0]
        if not self.metrics:
            raise CompareError(f"unknown metric {name!r}: no experiment has metrics yet")
        if hits:
            raise CompareError(f"ambiguous metric {name!r}; name one of: {', '.join(hits)}")
        ours = [m.split(":", 1)[1] for m in self.metrics if m.startswith(EVAL_FILE + ":")]
        raise CompareError(f"unknown metric {name!r}; allowed: {', '.join(ours)} (of {EVAL_FILE}), or FILE:KEY "
                           f"for any of the {len(self.metrics)} metrics `dvc exp show` lists, e.g. metrics/train.json:val/loss")

    def read(self, name: str, path: str) -> str | None:
        """A git-tracked output of one experiment (the workspace's from disk)."""
        rev = self.table.loc[name, "rev"]
        if rev == "workspace":
            file = self.repo / path
            return file.read_text() if file.exists() else None
        proc = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=self.repo, capture_output=True, text=True, check=False)
        return proc.stdout if proc.returncode == 0 else None

    def curves(self, name: str) -> dict[str, pd.DataFrame]:
        """The DVCLive curves of one experiment: {"train/loss": DataFrame(step, value), ...}."""
        rev = self.table.loc[name, "rev"]
        if rev == "workspace":
            return read_curves_dir(self.repo / CURVES_DIR)
        listed = subprocess.run(["git", "ls-tree", "-r", "--name-only", rev, CURVES_DIR], cwd=self.repo,
                                capture_output=True, text=True, check=False).stdout.split()
        out = {}
        for path in listed:
            if path.endswith(".tsv"):
                out[path[len(CURVES_DIR) + 1: -4]] = _curve(io.StringIO(self.read(name, path)))
        return out


def _dvc_exp_show(repo: Path, all_commits: bool, rev: str | None = None) -> list[dict]:
    cmd = [sys.executable, "-m", "dvc", "exp", "show", "--json", *(["--all-commits"] if all_commits else []),
           *(["--rev", rev] if rev else [])]
    proc = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise CompareError(f"`dvc exp show` failed in {repo}: {(proc.stderr or proc.stdout).strip()[-500:]}")
    return json.loads(proc.stdout or "[]")


def load_runs(repo: str | Path = ".", all_commits: bool = False, rev: str | None = None) -> Runs:
    """Every experiment with results: the HEAD baseline (or `rev`, or every commit with `all_commits`),
    its experiments (queued ones once they finished) and the workspace when it differs."""
    repo = Path(repo).resolve()
    rows, pending = [], {}

    def add(name: str, rev: str, kind: str, data: dict | None, state: str | None, error) -> None:
        metrics = {}
        for file, content in ((data or {}).get("metrics") or {}).items():
            for key, value in _flatten((content or {}).get("data") or {}).items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    metrics[f"{file}:{key}"] = value
        if error or not metrics or (state and state not in ("success", "done")):
            if kind == "experiment":
                pending[name] = state or ("failed" if error else "no metrics")
            return
        params = _flatten(((data.get("params") or {}).get("params.yaml") or {}).get("data") or {})
        rows.append({"name": name, "rev": rev, "kind": kind, "created": data.get("timestamp"),
                     **{f"p:{k}": _param_value(v) for k, v in params.items()}, **{f"m:{k}": v for k, v in metrics.items()}})

    for row in _dvc_exp_show(repo, all_commits, rev):
        rev = row["rev"]
        kind = "workspace" if rev == "workspace" else "baseline"
        add(row.get("name") or ("workspace" if kind == "workspace" else rev[:7]), rev, kind, row.get("data"), None, row.get("error"))
        for exp in row.get("experiments") or []:
            last = exp["revs"][0]
            state = (exp.get("executor") or {}).get("state")
            add(exp.get("name") or last.get("name") or last["rev"][:7], last["rev"], "experiment", last.get("data"), state, last.get("error"))

    table = pd.DataFrame(rows)
    if table.empty:
        return Runs(repo, pd.DataFrame(columns=["rev", "kind", "created"]), [], [], pending)
    table = table.drop_duplicates("name", keep="last").set_index("name")
    params = [c for c in table.columns if c.startswith("p:")]
    metrics = [c for c in table.columns if c.startswith("m:")]
    # The workspace after `dvc exp run` is that experiment again: keep it only when it differs.
    values = table[params + metrics].map(str)
    if "workspace" in table.index and (values.drop(index="workspace") == values.loc["workspace"]).all(axis=1).any():
        table = table.drop(index="workspace")
    table = table.rename(columns=lambda c: c[2:] if c[:2] in ("p:", "m:") else c)
    return Runs(repo, table, [p[2:] for p in params], [m[2:] for m in metrics], pending)


def read_curves_dir(directory: str | Path) -> dict[str, pd.DataFrame]:
    """DVCLive curves from a directory of TSVs (also while a run is still writing them)."""
    directory = Path(directory)
    return {str(p.relative_to(directory))[:-4]: _curve(p) for p in sorted(directory.rglob("*.tsv"))}


def _curve(source) -> pd.DataFrame:
    frame = pd.read_csv(source, sep="\t")
    return frame.rename(columns={frame.columns[-1]: "value"})[["step", "value"]]


# ---------------------------------------------------------------------------- leaderboard


def lower_is_better(metric: str) -> bool:
    return any(word in metric.split(":")[-1] for word in LOWER_IS_BETTER)


def short(metric: str) -> str:
    """`metrics/eval.json:test/x` -> `test/x`; other files keep their stem: `summary:best.val/loss`."""
    file, key = metric.split(":", 1)
    return key if file == EVAL_FILE else f"{Path(file).stem if Path(file).stem != 'metrics' else Path(file).parent.name}:{key}"


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
    labels = {m: short(m) + (FINAL_CHECK if m != metric and short(m).startswith("test/") else "") for m in metrics}
    board = board.rename(columns=labels).rename_axis("experiment").reset_index()
    board.insert(0, "rank", range(1, len(board) + 1))
    return board


# ---------------------------------------------------------------------------- recommendations


def _round(value: float, integer: bool) -> float | int:
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
            out.append((_round(mid, integer), f"between {low:g} and {high:g}{' (log scale)' if log else ''}"))
        else:
            step = (value / 2 if side == "below" else value * 2) if log else (value - spread if side == "below" else value + spread)
            out.append((_round(step, integer), f"{'below' if side == 'below' else 'above'} the tried range"))
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
        node[leaf] = yaml.safe_load(value) if isinstance(value, str) and value.startswith("[") else value
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
        lines.append("# the best again with other seeds, to see whether its lead holds (then `spelltune significance`):")
        lines += [f"dvc exp run --queue {args} -S train.seed={s}".replace("  ", " ") for s in seeds]
    return lines


# ---------------------------------------------------------------------------- plots


def _fig_png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _as_axis(series: pd.Series) -> tuple[pd.Series, list | None]:
    """Numeric params as they are; others as category positions with their labels."""
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        return series.astype(float), None
    labels = sorted(series.map(str).unique())
    return series.map(str).map(labels.index).astype(float), labels


def plot_metric_vs_params(runs: Runs, metric: str, ascending: bool | None = None):
    import matplotlib.pyplot as plt

    table = ranked(runs, metric, ascending)
    params = runs.varying() or ["train.lr"]
    cols = min(3, len(params))
    rows = math.ceil(len(params) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), squeeze=False)
    for ax, param in zip(axes.flat, params):
        x, labels = _as_axis(table[param])
        ax.scatter(x, table[metric], s=36, alpha=0.8)
        ax.scatter(x.iloc[:1], table[metric].iloc[:1], s=120, facecolors="none", edgecolors="red", label="best")
        if labels is not None:
            ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right")
        else:
            if param in LOG_SCALE and (x > 0).all() and x.max() / x.min() >= 4:
                ax.set_xscale("log")
            ticks = sorted(x.unique())
            if len(ticks) <= 6:  # label the values tried, plainly (no 2x10^-3 clutter)
                ax.set_xticks(ticks, [f"{t:g}" for t in ticks], rotation=30 if len(ticks) > 3 else 0)
                ax.minorticks_off()
        ax.set(xlabel=param, ylabel=short(metric))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(params):]:
        ax.set_visible(False)
    axes.flat[0].legend(loc="best", fontsize=8)
    fig.suptitle(f"{short(metric)} against each varying parameter")
    fig.tight_layout()
    return fig


def plot_parallel(runs: Runs, metric: str, ascending: bool | None = None):
    """Parallel coordinates: every varying param and the metric, scaled to [0, 1] with the
    real values at the ends of each axis; lines coloured from best (dark) to worst."""
    import matplotlib.pyplot as plt
    from pandas.plotting import parallel_coordinates

    table = ranked(runs, metric, ascending)
    columns = [*runs.varying(), metric]
    scaled, ends = pd.DataFrame(index=table.index), {}
    for col in columns:
        x, labels = _as_axis(table[col])
        low, high = x.min(), x.max()
        scaled[col] = (x - low) / (high - low) if high > low else 0.5
        ends[col] = (labels[0], labels[-1]) if labels else (f"{low:.4g}", f"{high:.4g}")
    scaled = scaled.rename(columns={metric: short(metric)})
    scaled["experiment"] = [f"{i + 1}. {name}" for i, name in enumerate(table.index)]
    fig, ax = plt.subplots(figsize=(max(6, 2.2 * len(columns)), 4.2))
    parallel_coordinates(scaled, "experiment", ax=ax, colormap="viridis", linewidth=2, alpha=0.85)
    box = {"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.85}
    for i, col in enumerate(columns):
        ax.annotate(ends[col][0], (i, 0), xytext=(0, -16), textcoords="offset points", fontsize=9, ha="center", bbox=box)
        ax.annotate(ends[col][1], (i, 1), xytext=(0, 8), textcoords="offset points", fontsize=9, ha="center", bbox=box)
    ax.set(ylim=(-0.18, 1.18), yticks=[])
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, title="rank. experiment")
    ax.set_title("Parallel coordinates (each axis scaled from its lowest to its highest value)")
    fig.tight_layout()
    return fig


LEARNING_CURVES = ("train/loss", "val/loss", "val/letter_position_accuracy")


def plot_learning_curves(runs: Runs, names: list[str], curves: tuple[str, ...] = LEARNING_CURVES):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.6), squeeze=False)
    for i, name in enumerate(names):
        data = runs.curves(name)
        for ax, curve in zip(axes[0], curves):
            if curve in data:  # line styles cycle too, so that identical curves stay visible
                ax.plot(data[curve]["step"], data[curve]["value"], marker="o" if len(data[curve]) < 12 else None,
                        markersize=3, linestyle=("-", "--", ":", "-.")[i % 4], color=f"C{i % 10}", label=name)
    for ax, curve in zip(axes[0], curves):
        ax.set(title=curve, xlabel="optimizer step")
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.06 * math.ceil(len(labels) / 6) + 0.04, 1, 1))
    return fig


def plot_training(curves: dict[str, pd.DataFrame], title: str = ""):
    """The monitor's panels for one run: loss, val accuracy, learning rate, progress, throughput."""
    import matplotlib.pyplot as plt

    panels = [("loss", ["train/loss", "val/loss"]), ("val accuracy", ["val/letter_position_accuracy", "val/spelling_exact_match"]),
              ("learning rate", ["train/learning_rate"]), ("grad norm", ["train/grad_norm"]),
              ("progress %", ["progress/completion_pct"]), ("tokens / s", ["throughput/tokens_per_second"])]
    fig, axes = plt.subplots(2, 3, figsize=(14, 6.5))
    for ax, (label, names) in zip(axes.flat, panels):
        for name in names:
            if name in curves and len(curves[name]):
                ax.plot(curves[name]["step"], curves[name]["value"], marker="o" if len(curves[name]) < 12 else None, label=name)
        ax.set(title=label, xlabel="optimizer step")
        ax.grid(alpha=0.3)
        if len(names) > 1:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def running_dirs(repo: str | Path = ".") -> dict[str, Path]:
    """Curve directories on disk: the workspace's, and those of queued runs in progress (DVC
    runs them in temporary workspaces under .dvc/tmp/exps/)."""
    repo = Path(repo)
    found = {"workspace": repo / CURVES_DIR} if (repo / CURVES_DIR).exists() else {}
    for path in sorted((repo / ".dvc" / "tmp" / "exps").glob(f"*/{CURVES_DIR}")):
        found[f"queued run in {path.relative_to(repo).parts[3]}"] = path
    return found


def latest_curves(repo: str | Path = ".", experiment: str = "") -> tuple[str, dict[str, pd.DataFrame]]:
    """The curves of `experiment` (a finished one, by name), or else of the run whose curve
    files were written last: the one in progress, or the workspace's last run."""
    dirs = running_dirs(repo)
    if experiment and experiment not in dirs:
        runs = load_runs(repo)
        name = runs.resolve(experiment)
        return name, runs.curves(name)
    if not dirs:
        raise CompareError(f"no training curves under {Path(repo) / CURVES_DIR}: start a run with `dvc exp run`")
    newest = lambda d: max((f.stat().st_mtime for f in d.rglob("*.tsv")), default=0)
    label = experiment or max(dirs, key=lambda k: newest(dirs[k]))
    return label, read_curves_dir(dirs[label])


def status_line(curves: dict[str, pd.DataFrame]) -> str:
    """One line: where the run is and how it goes."""
    def last(name):
        frame = curves.get(name)
        return frame["value"].iloc[-1] if frame is not None and len(frame) else None

    parts = []
    if (step := last("time/gradient_steps")) is not None:
        parts.append(f"step {step:.0f}")
    for name, fmt in (("progress/completion_pct", "{:.0f}% done"), ("train/loss", "train/loss {:.4g}"), ("val/loss", "val/loss {:.4g}"),
                      ("val/letter_position_accuracy", "val letter accuracy {:.3f}"), ("throughput/steps_per_hour", "{:.0f} steps/h"),
                      ("time/wallclock_hours", "{:.2f} h so far")):
        if (value := last(name)) is not None:
            parts.append(fmt.format(value))
    return ", ".join(parts) or "no curves yet"


# ---------------------------------------------------------------------------- report


def _table_html(frame: pd.DataFrame, highlight_first: bool = False) -> str:
    def fmt(v):
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:.4g}"
        return html.escape(str(v))

    head = "".join(f"<th>{html.escape(str(c)).replace('/', '/<wbr>').replace('.', '.<wbr>')}</th>" for c in frame.columns)
    body = "".join(
        f"<tr{' class=best' if highlight_first and i == 0 else ''}>" + "".join(f"<td>{fmt(v)}</td>" for v in row) + "</tr>"
        for i, row in enumerate(frame.itertuples(index=False))
    )
    return f"<div class=scroll><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def _bold_verdict(sentence: str) -> str:
    head, _, verdict = sentence.rpartition(": ")
    return f"{html.escape(head)}: <b>{html.escape(verdict)}</b>"


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


CSS = """body{font-family:system-ui,sans-serif;max-width:1300px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:14px;margin:0.5em 0 1.5em}th,td{border:1px solid #ccc;padding:4px 10px;text-align:right}
th{background:#f0f0f0;max-width:9em;vertical-align:bottom;overflow-wrap:anywhere}td:nth-child(2),th:nth-child(2){text-align:left}
.scroll{overflow-x:auto}li{margin:0.4em 0}tr.best td{background:#eaf6ea;font-weight:600}
img{max-width:100%;display:block;margin:0.5em 0 1.5em}pre{background:#f6f6f6;padding:0.8em;overflow-x:auto;font-size:13px}
.note{color:#555}h2{border-bottom:1px solid #ddd;padding-bottom:0.2em;margin-top:1.6em}"""


def write_report(runs: Runs, metric: str = DEFAULT_METRIC, ascending: bool | None = None, out: str | Path = "compare",
                 curves_top: int = 8) -> dict[str, Path]:
    """leaderboard.csv, leaderboard.md and compare.html (self-contained: plots inlined) in `out`."""
    from spelltune.experiments import significance as analysis

    metric = runs.resolve_metric(metric)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    board = leaderboard(runs, metric, ascending)
    paths = {"csv": out / "leaderboard.csv", "md": out / "leaderboard.md", "html": out / "compare.html"}
    board.to_csv(paths["csv"], index=False)
    seeds = analysis.seed_groups(runs, metric)
    importance = analysis.importance(runs, metric, ascending)
    significance = analysis.default_comparisons(runs, metric, ascending)
    lines = recommend(runs, metric, ascending)

    md = [f"# Leaderboard: {short(metric)} ({'lower' if ascending or (ascending is None and lower_is_better(metric)) else 'higher'} is better)",
          "", board.to_markdown(index=False, floatfmt=".4g"), ""]
    if runs.pending:
        md += [f"Not ranked (no results yet): {', '.join(f'{n} ({s})' for n, s in runs.pending.items())}", ""]
    if seeds is not None:
        md += ["## Same config, different seeds (mean ± 95% CI)", "", seeds.to_markdown(index=False, floatfmt=".4g"), ""]
    md += ["## Significance", "", *[f"- {r.sentence()}" for r in significance], ""]
    md += ["## Parameter importance", ""]
    md += [importance.to_markdown(floatfmt=".3f") if isinstance(importance, pd.DataFrame) else importance, ""]
    md += ["## Next configs to try", "", "```", *lines, "```", ""]
    paths["md"].write_text("\n".join(md))

    top = list(ranked(runs, metric, ascending).index[:curves_top])
    parts = [f"<h1>Experiments ranked by {html.escape(short(metric))}</h1>",
             (f"<p class=note>{len(board)} finished experiments in {html.escape(str(runs.repo))}; "
              f"params shown are those that vary. Metric: <code>{html.escape(metric)}</code>.</p>"),
             _table_html(board, highlight_first=True)]
    if runs.pending:
        parts.append(f"<p class=note>Not ranked (no results yet): {html.escape(', '.join(f'{n} ({s})' for n, s in runs.pending.items()))}</p>")
    if len(board):
        parts += ["<h2>Metric against each varying parameter</h2>", _img(_fig_png(plot_metric_vs_params(runs, metric, ascending)), "metric vs params")]
        if runs.varying():
            parts += ["<h2>Parallel coordinates</h2>", _img(_fig_png(plot_parallel(runs, metric, ascending)), "parallel coordinates")]
        parts += [f"<h2>Learning curves (top {len(top)})</h2>", _img(_fig_png(plot_learning_curves(runs, top)), "learning curves")]
    parts.append("<h2>Significance (paired, same evaluation items)</h2>")
    parts.append("<ul>" + "".join(f"<li>{_bold_verdict(r.sentence())}</li>" for r in significance) + "</ul>" if significance
                 else "<p class=note>Needs at least one finished experiment with per-item predictions.</p>")
    if seeds is not None:
        parts += ["<h2>Same config, different seeds (mean ± 95% CI)</h2>", _table_html(seeds)]
    parts.append("<h2>Parameter importance</h2>")
    if isinstance(importance, pd.DataFrame):
        parts += [f"<p class=note>{html.escape(analysis.IMPORTANCE_NOTE)}</p>", _img(_fig_png(analysis.plot_importance(importance, short(metric))), "parameter importance"), _table_html(importance.reset_index())]
    else:
        parts.append(f"<p class=note>{html.escape(importance)}</p>")
    parts += ["<h2>Next configs to try</h2>", f"<pre>{html.escape(chr(10).join(lines))}</pre>"]
    paths["html"].write_text(f"<!doctype html><html><head><meta charset=utf-8><title>spelltune: compare experiments</title>"
                             f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>")
    return paths
