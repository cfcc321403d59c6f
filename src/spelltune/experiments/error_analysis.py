"""Error analysis of one experiment: accuracy by length, position and letter, confusions, worst words."""

from __future__ import annotations

import difflib
import re

import numpy as np
import pandas as pd

from spelltune.experiments.runs import CompareError


def _clip(text: str, width: int = 40) -> str:
    text = str(text).replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


# A spelled letter answer that never reached its "= x": the model went on counting past the
# position asked until the token budget cut the reply ("b1 a2 n3 a4 n5").
_COUNTING = re.compile(r"^(?:[A-Za-z]\d+\s*)+$")


def _cut(reply: str) -> bool:
    return bool(_COUNTING.match(str(reply).strip()))


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
    letters["predicted"] = letters["reply"].map(lambda r: parse_letter(r) or ("…" if _cut(r) else "∅"))

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
        pairs += [
            (e, g, r.question, _clip(r.reply)) for e, g in _substitutions(r.word, "".join(parse_spelling(r.reply)))
        ]
    confusions = pd.DataFrame(pairs, columns=["expected", "predicted", "question", "reply"])
    if not confusions.empty:
        confusions = (confusions.groupby(["expected", "predicted"])
                      .agg(count=("question", "size"), example=("question", "first"), reply=("reply", "first"))
                      .sort_values("count", ascending=False).head(examples).reset_index())

    wrong = p[~p["correct"]].assign(reply=lambda w: w["reply"].map(_clip))
    worst = (
        p.groupby("word")
        .agg(items=("correct", "size"), accuracy=("correct", "mean"), char_error_rate=("cer", "mean"))
        .sort_values(["accuracy", "items", "char_error_rate"], ascending=[True, False, False])
        .head(examples)
    )
    first_wrong = wrong.drop_duplicates("word").set_index("word")
    worst["example"] = [
        f"{first_wrong.loc[w, 'question']} → {first_wrong.loc[w, 'reply']!r} (expected {first_wrong.loc[w, 'answer']})"
        if w in first_wrong.index
        else ""
        for w in worst.index
    ]
    summary = pd.DataFrame(
        {
            "items": [len(p)],
            "letter_accuracy": [letters["correct"].mean()],
            "spelling_exact_match": [spells["correct"].mean()],
            "char_error_rate": [spells["cer"].mean()],
        }
    )
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
              "confusions": "Most common confusions (expected → predicted; ∅: no letter / dropped; "
                            "…: counting on until the token budget cut the reply)",
              "worst_words": "Worst words"}
    parts = [f"# Errors of {name} ({split} split)"]
    for key, title in titles.items():
        frame = result[key]
        text = (
            "(none)"
            if frame.empty
            else frame.to_markdown(index=key not in ("summary", "confusions", "worst_words"), floatfmt=".3g")
        )
        parts += ["", f"## {title}", "", text]
    return "\n".join(parts) + "\n"
