"""Statistics over experiments: is a difference real, which params matter, where the model fails.

- `paired_test`: two models on the same evaluation items. McNemar's exact test (a binomial
  test on the items exactly one of them got right) and a paired bootstrap CI for the
  difference in accuracy.
- `seed_groups`: experiments that differ only in `train.seed`, as mean ± 95% t-interval.
- `importance`: the share of the metric's variance each varying param explains.
- `error_analysis`: accuracy by word length, letter position and letter; confusions; worst words.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from spelltune.experiments.leaderboard import lower_is_better, ranked
from spelltune.experiments.runs import DEFAULT_METRIC, CompareError, Runs, short
from spelltune.paths import SPLIT_OF_PREFIX

ALPHA = 0.05
TASKS = {"letter_position_accuracy": "letter_position", "spelling_exact_match": "spelling"}
BASE = "base"  # the base model, as an experiment name for `significance`


# ---------------------------------------------------------------------------- predictions


def predictions(runs: Runs, name: str, base: bool = False) -> pd.DataFrame:
    """Every scored item of one experiment (metrics/predictions/eval.jsonl), or of the base
    model evaluated in that experiment (metrics/predictions/base.jsonl)."""
    path = f"metrics/predictions/{'base' if base else 'eval'}.jsonl"
    text = runs.read(name, path)
    if text is None:
        raise CompareError(f"experiment {name!r} has no {path}")
    return pd.DataFrame([json.loads(line) for line in text.splitlines() if line.strip()])


def split_and_task(metric: str) -> tuple[str, str, str | None]:
    """`metrics/eval.json:test/letter_position_accuracy` -> ("test", "letter_position", None);
    `val/common/spelling_exact_match` -> ("validation", "spelling", "common"): a subset of
    task.scoring.GROUP_ORDER (band, wording, or both)."""
    from spelltune.task.scoring import GROUP_ORDER, VOCABULARY_LABELS, VOCABULARY_SPLIT

    key = metric.split(":")[-1]
    prefix, *group, name = key.split("/")
    if prefix == VOCABULARY_SPLIT and name in TASKS and len(group) == 1 and group[0] in VOCABULARY_LABELS:
        return VOCABULARY_SPLIT, TASKS[name], group[0]  # what users meet: rows name their groups
    if prefix not in SPLIT_OF_PREFIX or name not in TASKS or len(group) > 1 or (group and group[0] not in GROUP_ORDER):
        allowed = ", ".join(f"{p}/{t}" for p in SPLIT_OF_PREFIX for t in TASKS)
        raise CompareError(f"significance needs an accuracy metric, got {key!r}; allowed: {allowed}, "
                           f"or one subset of them: {prefix if prefix in SPLIT_OF_PREFIX else 'val'}/"
                           f"{{{','.join(GROUP_ORDER)}}}/…, or vocabulary/{{{','.join(VOCABULARY_LABELS)}}}/…")
    return SPLIT_OF_PREFIX[prefix], TASKS[name], group[0] if group else None


# ---------------------------------------------------------------------------- significance


@dataclass
class PairedResult:
    a: str
    b: str
    metric: str
    n: int
    acc_a: float
    acc_b: float
    only_a: int  # items only A got right
    only_b: int  # items only B got right
    p_value: float
    ci: tuple[float, float]

    @property
    def diff(self) -> float:
        return self.acc_a - self.acc_b

    @property
    def real(self) -> bool:
        return self.p_value < ALPHA

    def sentence(self) -> str:
        if self.only_a == self.only_b == 0:
            verdict = "no item is scored differently: the two are identical on this metric, nothing to test"
        else:
            verdict = f"the difference is real at p<{ALPHA:g}" if self.real else "the difference could be noise"
        return (
            f"{self.a} vs {self.b} on {self.metric}: {self.acc_a:.3f} vs {self.acc_b:.3f} "
            f"(difference {self.diff:+.3f}, 95% CI [{self.ci[0]:+.3f}, {self.ci[1]:+.3f}], {self.n} paired items; "
            f"{self.only_a} right only for {self.a}, {self.only_b} only for {self.b}; McNemar exact "
            f"p={self.p_value:.3g}): "
            f"{verdict}."
        )


def mcnemar_exact(correct_a, correct_b) -> tuple[int, int, float]:
    """Discordant counts and McNemar's exact two-sided p-value: under 'no difference', each
    discordant item is equally likely to favour A or B."""
    from scipy.stats import binomtest

    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    p = 1.0 if only_a + only_b == 0 else binomtest(only_a, only_a + only_b, 0.5).pvalue
    return only_a, only_b, float(p)


def bootstrap_diff_ci(correct_a, correct_b, n_resamples: int = 9999, seed: int = 0) -> tuple[float, float]:
    """95% paired bootstrap CI (percentile) of accuracy(A) - accuracy(B): items resampled together."""
    from scipy.stats import bootstrap

    a, b = np.asarray(correct_a, float), np.asarray(correct_b, float)
    if len(a) < 2 or np.all(a - b == (a - b)[0]):
        d = float(np.mean(a - b)) if len(a) else float("nan")
        return d, d
    res = bootstrap((a, b), lambda x, y, axis: x.mean(axis) - y.mean(axis), paired=True, vectorized=True,
                    n_resamples=n_resamples, method="percentile", rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def paired_test(preds_a: pd.DataFrame, preds_b: pd.DataFrame, metric: str, a: str = "A", b: str = "B") -> PairedResult:
    """McNemar + paired bootstrap on the items both were scored on (same split, task, question)."""
    from spelltune.task.scoring import groups

    split, task, group = split_and_task(metric)
    keys = ["split", "question"]

    def pick(p):
        rows = p[(p["split"] == split) & (p["task"] == task)]
        if group is not None:
            rows = rows[[group in (r.get("groups") or groups(r)) for r in rows.to_dict("records")]]
        return rows[[*keys, "correct"]]

    pairs = pick(preds_a).merge(pick(preds_b), on=keys, suffixes=("_a", "_b"))
    if pairs.empty:
        raise CompareError(f"{a} and {b} share no {split} {task} items: were they evaluated on the same data?")
    ca, cb = pairs["correct_a"].astype(bool), pairs["correct_b"].astype(bool)
    only_a, only_b, p = mcnemar_exact(ca, cb)
    return PairedResult(a, b, metric.split(":")[-1], len(pairs), float(ca.mean()), float(cb.mean()), only_a, only_b, p,
                        bootstrap_diff_ci(ca, cb))


def compare_two(runs: Runs, a: str, b: str, metric: str) -> PairedResult:
    """Experiment `a` against experiment `b` (`b` = "base": the base model of `a`'s evaluation)."""
    a = runs.resolve(a)
    if b == BASE:
        return paired_test(predictions(runs, a), predictions(runs, a, base=True), metric, a, "base model")
    b = runs.resolve(b)
    return paired_test(predictions(runs, a), predictions(runs, b), metric, a, b)


def default_comparisons(runs: Runs, metric: str, ascending: bool | None = None) -> list[PairedResult]:
    """The best against the runner-up, and the best against the base model, ranked by
    `metric` and tested on it when it is an accuracy (else on validation spelling exact match)."""
    order = list(ranked(runs, metric, ascending).index)
    try:
        split_and_task(metric)
    except CompareError:
        metric = DEFAULT_METRIC
    pairs = [(order[0], order[1])] if len(order) > 1 else []
    pairs += [(order[0], BASE)] if order else []
    results = []
    for a, b in pairs:
        try:
            results.append(compare_two(runs, a, b, metric))
        except CompareError:
            continue  # e.g. an old commit without per-item predictions
    return results


def seed_groups(runs: Runs, metric: str) -> pd.DataFrame | None:
    """Experiments identical but for train.seed: n, mean, sd and the 95% t-interval of `metric`."""
    from scipy import stats

    if "train.seed" not in runs.params:
        return None
    table = runs.table[runs.table[metric].notna()]
    others = [p for p in runs.params if p != "train.seed"]
    rows = []
    for _, group in table.groupby(table[others].map(str).apply("|".join, axis=1), sort=False):
        group = group.drop_duplicates("train.seed")  # the same seed again is the same run (deterministic)
        if len(group) < 2:
            continue
        values = group[metric].astype(float)
        n, mean, sd = len(values), values.mean(), values.std(ddof=1)
        low, high = (mean, mean) if sd == 0 else stats.t.interval(0.95, n - 1, loc=mean, scale=sd / np.sqrt(n))
        config = (
            ", ".join(f"{p}={group[p].iloc[0]}" for p in runs.varying() if p != "train.seed") or "(baseline config)"
        )
        rows.append({"config": config, "seeds": ", ".join(str(s) for s in group["train.seed"]), "n": n,
                     f"mean {short(metric)}": mean, "± (95% CI)": (high - low) / 2, "sd": sd,
                     "experiments": ", ".join(group.index)})
    return pd.DataFrame(rows) if rows else None


# ---------------------------------------------------------------------------- importance

MIN_EXPERIMENTS = 4
IMPORTANCE_NOTE = ("variance explained (eta squared): the share of the metric's variance between groups of experiments "
                   "that share the param's value, each param on its own (so the shares need not sum to 1); "
                   "PED-ANOVA (Optuna, from 10 experiments): how much each param matters for reaching the top results.")


def importance(runs: Runs, metric: str, ascending: bool | None = None) -> pd.DataFrame | str:
    """How much of the metric's spread each varying param explains.

    "variance explained" is eta squared: the share of the metric's variance between the
    groups of experiments that share a value of the param (numeric params with more than
    four values in quartile bins). With 10 or more experiments, Optuna's PED-ANOVA
    (importance for reaching the top quantile; needs no scikit-learn) is added as a second
    opinion. Returns a one-line explanation instead when there is too little to say."""
    table = runs.table[runs.table[metric].notna()]
    params = [p for p in runs.varying() if p != "train.seed" and table[p].map(str).nunique() > 1]
    y = table[metric].astype(float)
    if len(table) < MIN_EXPERIMENTS or not params or y.nunique() < 2:
        why = (
            f"{len(table)} finished experiments"
            if len(table) < MIN_EXPERIMENTS
            else "no param varies apart from the seed"
            if not params
            else f"{short(metric)} is the same in every experiment"
        )
        return (f"Parameter importance needs at least {MIN_EXPERIMENTS} finished experiments with varying params "
                f"and a metric that differs; here: {why}.")
    total = ((y - y.mean()) ** 2).sum()
    rows = {}
    for p in params:
        groups = table[p]
        if pd.api.types.is_numeric_dtype(groups) and groups.nunique() > 4:
            groups = pd.qcut(groups.rank(method="first"), 4, labels=False)
        between = y.groupby(groups.map(str)).agg(["mean", "size"])
        rows[p] = {"variance explained": float((between["size"] * (between["mean"] - y.mean()) ** 2).sum() / total),
                   "groups": len(between)}
    result = pd.DataFrame.from_dict(rows, orient="index").sort_values("variance explained", ascending=False)
    if len(table) >= 10:
        result["PED-ANOVA"] = pd.Series(_ped_anova(table, params, metric, ascending))
    return result.rename_axis("param")


def _ped_anova(table: pd.DataFrame, params: list[str], metric: str, ascending: bool | None) -> dict[str, float]:
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    minimize = lower_is_better(metric) if ascending is None else ascending
    dists = {}
    for p in params:
        col = table[p]
        if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col) and col.notna().all():
            dists[p] = FloatDistribution(
                float(col.min()), float(col.max()), log=bool((col > 0).all() and col.max() / col.min() >= 10)
            )
        else:
            dists[p] = CategoricalDistribution(sorted(col.map(str).unique()))
    study = optuna.create_study(direction="minimize")
    study.add_trials([
        optuna.trial.create_trial(
            params={p: (float(row[p]) if isinstance(dists[p], FloatDistribution) else str(row[p])) for p in params},
            distributions=dists, value=float(row[metric]) if minimize else -float(row[metric]))
        for _, row in table.iterrows()
    ])
    evaluator = optuna.importance.PedAnovaImportanceEvaluator(target_quantile=max(0.1, 5 / len(table)))
    return optuna.importance.get_param_importances(study, evaluator=evaluator, normalize=True)


def plot_importance(result: pd.DataFrame, metric_label: str):
    import matplotlib.pyplot as plt

    columns = [c for c in ("variance explained", "PED-ANOVA") if c in result]
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(result) + 1.4))
    result[columns][::-1].plot.barh(ax=ax, width=0.7)
    ax.set(xlim=(0, 1), xlabel="share (0–1)", ylabel="", title=f"Which params move {metric_label}")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------- error analysis










