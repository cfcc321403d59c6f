"""Statistics over experiments: is a difference real, which params matter, where the model fails.

- `paired_test`: two models on the same evaluation items. McNemar's exact test (a binomial
  test on the items exactly one of them got right) and a paired bootstrap CI for the
  difference in accuracy.
- `seed_groups`: experiments that differ only in `train.seed`, as mean ± 95% t-interval.
- `importance`: the share of the metric's variance each varying param explains.
- `error_analysis`: accuracy by word length, letter position and letter; confusions; worst words.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from spelltune.experiments.runs import DEFAULT_METRIC, CompareError, Runs, lower_is_better, ranked, short

ALPHA = 0.05
SPLITS = {"val": "validation", "test": "test"}
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


def split_and_task(metric: str) -> tuple[str, str]:
    """`metrics/eval.json:test/letter_position_accuracy` -> ("test", "letter_position")."""
    key = metric.split(":")[-1]
    prefix, _, name = key.partition("/")
    if prefix not in SPLITS or name not in TASKS:
        allowed = ", ".join(f"{p}/{t}" for p in SPLITS for t in TASKS)
        raise CompareError(f"significance needs an accuracy metric, got {key!r}; allowed: {allowed}")
    return SPLITS[prefix], TASKS[name]


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
        verdict = f"the difference is real at p<{ALPHA:g}" if self.real else "the difference could be noise"
        return (f"{self.a} vs {self.b} on {self.metric}: {self.acc_a:.3f} vs {self.acc_b:.3f} "
                f"(difference {self.diff:+.3f}, 95% CI [{self.ci[0]:+.3f}, {self.ci[1]:+.3f}], {self.n} paired items; "
                f"{self.only_a} right only for {self.a}, {self.only_b} only for {self.b}; McNemar exact p={self.p_value:.3g}): "
                f"{verdict}.")


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
    split, task = split_and_task(metric)
    keys = ["split", "question"]
    pick = lambda p: p[(p["split"] == split) & (p["task"] == task)][[*keys, "correct"]]
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
        config = ", ".join(f"{p}={group[p].iloc[0]}" for p in runs.varying() if p != "train.seed") or "(baseline config)"
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
        why = (f"{len(table)} finished experiments" if len(table) < MIN_EXPERIMENTS else
               "no param varies apart from the seed" if not params else f"{short(metric)} is the same in every experiment")
        return f"Parameter importance needs at least {MIN_EXPERIMENTS} finished experiments with varying params and a metric that differs; here: {why}."
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
            dists[p] = FloatDistribution(float(col.min()), float(col.max()), log=bool((col > 0).all() and col.max() / col.min() >= 10))
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


def _clip(text: str, width: int = 40) -> str:
    text = str(text).replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def _substitutions(expected: str, got: str) -> list[tuple[str, str]]:
    """Letter-level confusions between a word and a spelled reply: substitutions, and
    dropped letters as (letter, "∅")."""
    out = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, expected, got, autojunk=False).get_opcodes():
        if op == "replace" and i2 - i1 == j2 - j1:
            out += list(zip(expected[i1:i2], got[j1:j2]))
        elif op in ("replace", "delete"):
            out += [(c, "∅") for c in expected[i1:i2]]
    return out


def error_analysis(preds: pd.DataFrame, split: str = "validation", examples: int = 10) -> dict[str, pd.DataFrame]:
    """Where one model fails, on one split ("test", "validation" or "all")."""
    from spelltune.task.scoring import parse_letter, parse_spelling, position_label

    p = preds if split == "all" else preds[preds["split"] == split]
    if p.empty:
        raise CompareError(f"no predictions for split {split!r}; allowed: test, validation, all")
    p = p.assign(length=p["word"].str.len(), correct=p["correct"].astype(bool))
    letters = p[p["task"] == "letter_position"].copy()
    spells = p[p["task"] == "spelling"].copy()
    letters["position"] = letters.assign(position=letters["position"].astype(int)).apply(position_label, axis=1)
    letters["predicted"] = letters["reply"].map(lambda r: parse_letter(r) or "∅")

    by_length = p.groupby("length").apply(lambda g: pd.Series({
        "letter_accuracy": g.loc[g["task"] == "letter_position", "correct"].mean(),
        "spelling_exact_match": g.loc[g["task"] == "spelling", "correct"].mean(),
        "char_error_rate": g["cer"].dropna().mean() if g["cer"].notna().any() else np.nan,
        "items": len(g)}), include_groups=False)
    order = sorted(letters["position"].unique(), key=lambda s: (s == "last", int(s) if s != "last" else 0))
    by_position = letters.groupby("position")["correct"].agg(accuracy="mean", items="size").reindex(order)
    by_letter = (letters.groupby("answer")["correct"].agg(accuracy="mean", items="size")
                 .sort_values(["accuracy", "items"], ascending=[True, False]).rename_axis("letter"))

    pairs = [(r.answer, r.predicted, r.question, _clip(r.reply)) for r in letters[~letters["correct"]].itertuples()]
    near_misses = spells[~spells["correct"] & (spells["cer"] <= 0.5)]  # far-off replies align to noise
    for r in near_misses.itertuples():
        pairs += [(e, g, r.question, _clip(r.reply)) for e, g in _substitutions(r.word, "".join(parse_spelling(r.reply)))]
    confusions = pd.DataFrame(pairs, columns=["expected", "predicted", "question", "reply"])
    if not confusions.empty:
        confusions = (confusions.groupby(["expected", "predicted"])
                      .agg(count=("question", "size"), example=("question", "first"), reply=("reply", "first"))
                      .sort_values("count", ascending=False).head(examples).reset_index())

    wrong = p[~p["correct"]].assign(reply=lambda w: w["reply"].map(_clip))
    worst = (p.groupby("word").agg(items=("correct", "size"), accuracy=("correct", "mean"), char_error_rate=("cer", "mean"))
             .sort_values(["accuracy", "items", "char_error_rate"], ascending=[True, False, False]).head(examples))
    first_wrong = wrong.drop_duplicates("word").set_index("word")
    worst["example"] = [f"{first_wrong.loc[w, 'question']} → {first_wrong.loc[w, 'reply']!r} (expected {first_wrong.loc[w, 'answer']})"
                        if w in first_wrong.index else "" for w in worst.index]
    summary = pd.DataFrame({"items": [len(p)], "letter_accuracy": [letters["correct"].mean()],
                            "spelling_exact_match": [spells["correct"].mean()], "char_error_rate": [spells["cer"].mean()]})
    return {"summary": summary, "by_length": by_length, "by_position": by_position, "by_letter": by_letter,
            "confusions": confusions, "worst_words": worst.reset_index()}


def plot_errors(result: dict[str, pd.DataFrame], title: str = ""):
    """Accuracy by word length (both tasks) and letter accuracy by the position asked."""
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 3.6))
    result["by_length"][["letter_accuracy", "spelling_exact_match"]].plot.bar(ax=left, rot=0, width=0.8)
    left.set(xlabel="word length", ylabel="accuracy", ylim=(0, 1), title="by word length")
    result["by_position"]["accuracy"].plot.bar(ax=right, rot=0, color="tab:green")
    right.set(xlabel="letter asked", ylabel="letter accuracy", ylim=(0, 1), title="by letter position")
    for ax in (left, right):
        ax.grid(axis="y", alpha=0.3)
    left.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def errors_markdown(name: str, result: dict[str, pd.DataFrame], split: str) -> str:
    titles = {"summary": "Overall", "by_length": "By word length", "by_position": "Letter questions by position asked",
              "by_letter": "Letter questions by expected letter (worst first)",
              "confusions": "Most common confusions (expected → predicted; ∅: no letter / dropped)",
              "worst_words": "Worst words"}
    parts = [f"# Errors of {name} ({split} split)"]
    for key, title in titles.items():
        frame = result[key]
        text = "(none)" if frame.empty else frame.to_markdown(index=key not in ("summary", "confusions", "worst_words"), floatfmt=".3g")
        parts += ["", f"## {title}", "", text]
    return "\n".join(parts) + "\n"
