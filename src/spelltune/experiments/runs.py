"""The experiments of a repository, loaded for comparison: what DVC's table does not answer.

    runs = load_runs(".")                         # every finished experiment, from `dvc exp show --json` and git
    board = leaderboard(runs, "val/spelling_exact_match")        # spelltune.experiments.leaderboard
    write_report(runs, metric, out="compare")     # spelltune.experiments.html_report

Each finished experiment is read through spelltune.store (git-tracked outputs by revision).
Statistics: spelltune.experiments.significance (paired tests, seeds, importance) and .error_analysis.
"""

from __future__ import annotations

import io
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from spelltune import store
from spelltune.params import flatten
from spelltune.paths import CURVES_DIR as CURVES_PATH
from spelltune.store import EVAL_FILE, SCORE_FILES

# Validation chooses, test confirms: every ranking, recommendation and significance test
# defaults to a val/ metric; test/ columns are shown as the final check only.
DEFAULT_METRIC = "metrics/eval.json:val/spelling_exact_match"
CURVES_DIR = CURVES_PATH.as_posix()
# Params whose useful values span orders of magnitude: neighbours are proposed on a log scale.
LOG_SCALE = {"train.lr", "lora.r", "lora.alpha", "train.batch_size", "train.grad_accum_steps", "train.max_steps"}


# Params that change how a run is logged, saved, placed or scored, not the model it trains:
# never shown or analysed as hyperparameters.
BOOKKEEPING = frozenset({
    "train.log_every", "train.eval_every", "train.save_every", "train.keep_last", "train.threads",
    "train.processes", "train.val_loss_items", "train.val_generate_items", "train.grad_norm_limit",
    "eval.batch_size", "eval.test", "data.vocabulary_sample",
})

class CompareError(ValueError):
    """A bad experiment name or metric, phrased as the one line the user sees."""


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
    every score (`metrics/eval.json:test/letter_position_accuracy`, ... of SCORE_FILES)."""

    repo: Path
    table: pd.DataFrame
    params: list[str]
    metrics: list[str]
    pending: dict[str, str] = field(default_factory=dict)  # queued/running/failed: name -> state

    @property
    def names(self) -> list[str]:
        return list(self.table.index)

    def varying(self) -> list[str]:
        """Params with more than one value across the experiments, bookkeeping left out
        (BOOKKEEPING: how often it logs or saves, where it runs, what evaluate scores)."""
        return [p for p in self.params if self.table[p].map(str).nunique() > 1 and p not in BOOKKEEPING]

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
        raise CompareError(
            f"unknown metric {name!r}; allowed: {', '.join(ours)} (of {EVAL_FILE}), or FILE:KEY "
            f"for any of the {len(self.metrics)} scores of {', '.join(SCORE_FILES)}, e.g. metrics/train.json:val/loss"
        )

    def read(self, name: str, path: str) -> str | None:
        """A git-tracked output of one experiment (the workspace's from disk)."""
        return store.read(self.table.loc[name, "rev"], path, self.repo)

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
                out[path[len(CURVES_DIR) + 1: -4]] = read_curve(io.StringIO(self.read(name, path)))
        return out


def load_runs(repo: str | Path = ".", all_commits: bool = False, rev: str | None = None) -> Runs:
    """Every experiment with results: the HEAD baseline (or `rev`, or every commit with `all_commits`),
    its experiments (queued ones once they finished) and the workspace when it differs."""
    repo = Path(repo).resolve()
    rows, pending = [], {}

    def add(name: str, rev: str, kind: str, data: dict | None, state: str | None, error) -> None:
        finished = not error and (data or {}).get("metrics") and state in (None, "success", "done")
        metrics = store.scores(rev, repo) if finished else {}
        if not metrics:
            if kind == "experiment":
                pending[name] = state or ("failed" if error else "no metrics")
            return
        params = flatten(((data.get("params") or {}).get("params.yaml") or {}).get("data") or {})
        rows.append({"name": name, "rev": rev, "kind": kind, "created": data.get("timestamp"),
                     "eval_set": store.eval_set(rev, repo),
                     **{f"p:{k}": _param_value(v) for k, v in params.items()},
                     **{f"m:{k}": v for k, v in metrics.items()}})

    try:
        shown = store.exp_show(repo, all_commits, rev)
    except store.StoreError as exc:
        raise CompareError(str(exc)) from None
    for row in shown:
        rev = row["rev"]
        kind = "workspace" if rev == "workspace" else "baseline"
        name = row.get("name") or ("workspace" if kind == "workspace" else rev[:7])
        add(name, rev, kind, row.get("data"), None, row.get("error"))
        for exp in row.get("experiments") or []:
            last = exp["revs"][0]
            state = (exp.get("executor") or {}).get("state")
            name = exp.get("name") or last.get("name") or last["rev"][:7]
            add(name, last["rev"], "experiment", last.get("data"), state, last.get("error"))

    table = pd.DataFrame(rows)
    if table.empty:
        return Runs(repo, pd.DataFrame(columns=["rev", "kind", "created", "eval_set"]), [], [], pending)
    table = table.drop_duplicates("name", keep="last").set_index("name")
    params = [c for c in table.columns if c.startswith("p:")]
    metrics = [c for c in table.columns if c.startswith("m:")]
    # The workspace after `dvc exp run` is that experiment again: keep it only when it differs.
    values = table[params + metrics].map(str)
    if "workspace" in table.index and (values.drop(index="workspace") == values.loc["workspace"]).all(axis=1).any():
        table = table.drop(index="workspace")
    table = table.rename(columns=lambda c: c[2:] if c[:2] in ("p:", "m:") else c)
    return Runs(repo, table, [p[2:] for p in params], [m[2:] for m in metrics], pending)


def select(runs: Runs, names: list[str] | None = None, where: list[str] | None = None) -> Runs:
    """The experiments named (`--exp`, names or revisions) and those whose param (or
    `eval_set`) has the value given (`--where key=value`, every one must hold)."""
    table = runs.table
    if names:
        table = table.loc[list(dict.fromkeys(runs.resolve(n) for n in names))]
    for condition in where or []:
        key, sep, value = condition.partition("=")
        if not sep or key not in [*runs.params, "eval_set"]:
            raise CompareError(f"--where {condition!r}: give KEY=VALUE with KEY a param (e.g. train.lr) or eval_set")
        table = table[table[key].map(str) == value]
    return Runs(runs.repo, table, runs.params, runs.metrics, runs.pending)


def comparable(runs: Runs) -> Runs:
    """`runs` when they were all scored on one eval set with one base model; otherwise one
    line naming the groups and how to pick one (scores of different items or models do
    not rank)."""
    groups = runs.table.groupby("eval_set", sort=False)
    if len(groups) <= 1:
        return runs
    described = []
    for key, group in sorted(groups, key=lambda kv: -len(kv[1])):
        source = group["model.source"].iloc[0] if "model.source" in group else "?"
        sizes = "+".join(str(group[k].iloc[0]) for k in ("data.validation_words", "data.test_words") if k in group)
        names = ", ".join(list(group.index[:3]) + (["..."] if len(group) > 3 else []))
        described.append(f"eval_set={key} ({len(group)}: {names}; model.source {source}, {sizes} held-out words)")
    raise CompareError(f"these experiments were scored on {len(described)} different eval sets or base models and do "
                       f"not rank together: {'; '.join(described)}. Pick one: --where eval_set=..., or --exp NAME")


def read_curves_dir(directory: str | Path) -> dict[str, pd.DataFrame]:
    """DVCLive curves from a directory of TSVs (also while a run is still writing them)."""
    directory = Path(directory)
    return {str(p.relative_to(directory))[:-4]: read_curve(p) for p in sorted(directory.rglob("*.tsv"))}


def read_curve(source) -> pd.DataFrame:
    frame = pd.read_csv(source, sep="\t")
    return frame.rename(columns={frame.columns[-1]: "value"})[["step", "value"]]


def short(metric: str) -> str:
    """`metrics/eval.json:test/x` -> `test/x`; other files keep their stem: `summary:best.val/loss`."""
    file, key = metric.split(":", 1)
    return (
        key
        if file == EVAL_FILE
        else f"{Path(file).stem if Path(file).stem != 'metrics' else Path(file).parent.name}:{key}"
    )
