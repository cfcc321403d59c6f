"""The outside check: a trained model on common English words from a list that is not in
this repository (the `wonderwords` package: its noun, verb and adjective lists), minus
every word of our own splits. A recipe that only works on our own wordfreq sample shows here.

    spelltune outside [--exp NAME | --adapter DIR] [--words 600] [--out outside.json]

Each word gets the held-out questions of the evaluate stage (2 letter questions and one
spelling question, same prompt and parsing); the result holds each metric with its n and
95 % interval, and the spelling exact match by word length.
"""

from __future__ import annotations

import random

from spelltune.task.questions import (
    HELD_OUT_LETTER_QUESTIONS,
    HELD_OUT_TASKS,
    candidate_words,
    questions_for,
    split_words,
)

CATEGORIES = ("nouns", "verbs", "adjectives")


def outside_words(n: int, data, seed: int = 0) -> list[str]:
    """`n` words of wonderwords' lists, a-z only, in the length range of `data`, that none
    of our splits holds (trained on, or used to choose or confirm)."""
    from wonderwords import RandomWord

    min_len, max_len = data.min_word_length, data.max_word_length
    ours = {w for split in split_words(candidate_words(min_len, max_len), data).values() for w in split}
    listed = {w for c in CATEGORIES for w in RandomWord().filter(include_categories=[c])}
    words = sorted(w for w in listed if w.isascii() and w.isalpha() and w.islower()
                   and min_len <= len(w) <= max_len and w not in ours)
    if len(words) < n:
        raise ValueError(f"--words {n}: only {len(words)} outside words of length {min_len}-{max_len}")
    return random.Random(seed).sample(words, n)


def outside_items(n_words: int, data, separator: str) -> list[dict]:
    """The held-out questions of the evaluate stage for `n_words` outside words."""
    rng = random.Random(0)
    return [q for w in outside_words(n_words, data)
            for q in questions_for(w, HELD_OUT_TASKS, HELD_OUT_LETTER_QUESTIONS, separator, rng)]


def summary(rows: list[dict], label: str) -> dict:
    """Each metric with its n and 95 % interval, and spelling exact match by word length."""
    from spelltune.task.scoring import breakdown, details

    by_length = breakdown(rows)["by_length"]
    return {"words": len({r["word"] for r in rows}), "source": "wonderwords " + "+".join(CATEGORIES),
            "adapter": label, **details(rows),
            "spelling_exact_match_by_length": {k: v["spelling_exact_match"] for k, v in by_length.items()}}
