"""Scoring predictions: parsing a model's reply and the task metrics.

Definitions (also in docs/model.md):
- letter_position_accuracy: share of letter questions whose parsed letter equals the answer.
  The reply is parsed leniently so that a chatty base model is not scored zero for its
  phrasing: a lone letter (quotes and punctuation ignored), else the letter after a final
  "=" (a spelled answer, "b1 a2 n3 = n"), else the letter in "... is 'x'".
- spelling_exact_match: share of spelling questions whose reply, split on '-', ',' and
  whitespace, is exactly the word's letters, one letter per piece ("banana" alone fails).
- char_error_rate: Levenshtein distance between the reply's letters and the word,
  divided by the word's length, clipped at 1; mean over spelling questions.
"""

from __future__ import annotations

import re
from collections import defaultdict

import numpy as np
from rapidfuzz.distance.Levenshtein import distance as levenshtein

_LONE_LETTER = re.compile(r"^\W*([A-Za-z])\W*$")
_SPELLED_THEN = re.compile(r"=\s*['\"]?([A-Za-z])['\"]?\W*$")  # "b1 a2 n3 = n" (data.letter_answer: spelled)
_LETTER_IS = re.compile(r"\bis\s+(?:the\s+letter\s+)?['\"]?([A-Za-z])['\"]?(?![A-Za-z])")
_PIECES = re.compile(r"[\s,\-]+")


def parse_letter(reply: str) -> str | None:
    m = _LONE_LETTER.match(reply) or _SPELLED_THEN.search(reply) or _LETTER_IS.search(reply)
    return m.group(1).lower() if m else None


def parse_spelling(reply: str) -> list[str]:
    return [p.lower() for p in _PIECES.split(reply.strip()) if p]


def score_item(item: dict, reply: str) -> dict:
    """The item's scores: `correct` for every task, `cer` for spelling."""
    if item["task"] == "letter_position":
        return {"correct": parse_letter(reply) == item["answer"], "cer": None}
    pieces = parse_spelling(reply)
    word = item["word"]
    letters = "".join(pieces)
    return {
        "correct": pieces == list(word),
        "cer": min(1.0, levenshtein(letters, word) / len(word)),
    }


def _mean(values) -> float | None:
    values = [float(v) for v in values if v is not None]
    return float(np.mean(values)) if values else None


def summarize(rows: list[dict]) -> dict:
    """The three task metrics over scored rows (each: task, correct, cer)."""
    letters = [r["correct"] for r in rows if r["task"] == "letter_position"]
    spells = [r for r in rows if r["task"] == "spelling"]
    return {
        "letter_position_accuracy": _mean(letters),
        "spelling_exact_match": _mean(r["correct"] for r in spells),
        "char_error_rate": _mean(r["cer"] for r in spells),
        "n_items": len(rows),
    }



def interval(values: list[float], binary: bool) -> tuple[float, float]:
    """95 % interval of a mean: Wilson's for a share of right answers, a seeded percentile
    bootstrap for a mean of per-item rates (character error rate)."""
    from scipy import stats

    if binary:
        ci = stats.binomtest(int(sum(values)), len(values)).proportion_ci(0.95, method="wilson")
        return float(ci.low), float(ci.high)
    if len(set(values)) == 1:
        return float(values[0]), float(values[0])
    ci = stats.bootstrap((np.asarray(values),), np.mean, n_resamples=2000, method="percentile", random_state=0)
    return float(ci.confidence_interval.low), float(ci.confidence_interval.high)


def details(rows: list[dict]) -> dict:
    """Each headline metric with its n (items of its task) and 95 % interval."""
    letters = [float(r["correct"]) for r in rows if r["task"] == "letter_position"]
    spells = [r for r in rows if r["task"] == "spelling"]
    samples = {
        "letter_position_accuracy": (letters, True),
        "spelling_exact_match": ([float(r["correct"]) for r in spells], True),
        "char_error_rate": ([r["cer"] for r in spells], False),
    }
    out = {}
    for name, (values, binary) in samples.items():
        if values:
            low, high = interval(values, binary)
            out[name] = {"value": float(np.mean(values)), "n": len(values), "ci_low": low, "ci_high": high}
    return out


# The subsets every held-out split is also scored on, in report order, with the label that
# reports and the model card show: frequency bands (task/questions.py BANDS), wordings and
# the common words in each wording.
GROUP_LABELS = {
    "common": "common words (rank ≤ 2,000)", "mid": "mid (rank 2,000–10,000)", "rare": "rare (rank 10,000–30,000)",
    "canonical": "canonical wording", "held_out": "held-out wordings",
    "common_canonical": "common words, canonical", "common_held_out": "common words, held-out wordings",
}
GROUP_ORDER = list(GROUP_LABELS)


def groups(row: dict) -> list[str]:
    """The subsets a row belongs to; rows from before bands and wordings existed have neither key."""
    band, wording = row.get("band"), row.get("wording")
    names = [g for g in (band, wording) if g]
    if band == "common" and wording:
        names.append(f"common_{wording}")
    return names


def group_details(rows: list[dict]) -> dict[str, dict]:
    """`details` of each subset of `groups`, in a fixed order."""
    by_group = defaultdict(list)
    for r in rows:
        for g in groups(r):
            by_group[g].append(r)
    return {g: details(by_group[g]) for g in sorted(by_group, key=GROUP_ORDER.index)}


# What users meet (data/vocabulary.jsonl, metrics vocabulary/GROUP/SCORE): the most frequent
# words as users meet them (trained words included), their trained and held-out parts, and a
# sample of the run's own training questions. Labelled as such wherever they are shown.
VOCABULARY_SPLIT = "vocabulary"
VOCABULARY_LABELS = {
    "top1k": "top 1,000 words as users meet them (trained words included)",
    "top1k_trained": "top 1,000: the trained words", "top1k_held_out": "top 1,000: the words never trained",
    "top5k": "top 5,000 (seeded sample) as users meet them", "top5k_trained": "top 5,000: the trained words",
    "top5k_held_out": "top 5,000: the words never trained", "train_questions": "a sample of its own training questions",
}


def vocabulary_details(rows: list[dict]) -> dict[str, dict]:
    """`details` of each vocabulary group a row names in `groups`, in VOCABULARY_LABELS' order."""
    by_group = defaultdict(list)
    for r in rows:
        for g in r["groups"]:
            by_group[g].append(r)
    return {g: details(by_group[g]) for g in VOCABULARY_LABELS if g in by_group}


def position_label(row: dict) -> str:
    return "last" if row["position"] == len(row["word"]) else str(row["position"])


def breakdown(rows: list[dict]) -> dict:
    """Metrics by word length (all tasks), by the tokens the word takes in the prompt (where
    rows have `word_tokens`), by frequency band, and letter-position accuracy by position;
    each with its n and 95 % intervals (`details`)."""
    by_length, by_tokens, by_band, by_position = (defaultdict(list) for _ in range(4))
    for r in rows:
        by_length[len(r["word"])].append(r)
        if r.get("word_tokens") is not None:
            by_tokens[min(r["word_tokens"], 4)].append(r)
        if r.get("band"):
            by_band[r["band"]].append(r)
        if r["task"] == "letter_position":
            by_position[position_label(r)].append(r)
    positions = sorted(by_position, key=lambda p: (p == "last", int(p) if p != "last" else 0))

    def scored(group: list[dict]) -> dict:
        return {**summarize(group), "intervals": details(group)}

    out = {
        "by_length": {str(n): scored(by_length[n]) for n in sorted(by_length)},
        "by_position": {p: scored(by_position[p]) for p in positions},
    }
    if by_tokens:  # "4" holds words of 4 or more tokens
        out["by_tokens"] = {str(n): scored(by_tokens[n]) for n in sorted(by_tokens)}
    if by_band:
        out["by_band"] = {b: scored(by_band[b]) for b in GROUP_ORDER if b in by_band}
    return out
