"""The outside check: a trained model on English words from lists that are not in this
repository, minus every word it was trained on. A recipe that only works on our own
wordfreq sample shows here.

    spelltune outside [--list common|wonderwords] [--exp NAME | --adapter DIR] [--words 600] [--out outside.json]

- common: the most frequent words of pyspellchecker's English frequency dictionary (built
  from subtitles, another source than wordfreq), the words users ask about most;
- wonderwords: the `wonderwords` package's noun, verb and adjective lists, sampled.

Each word gets the held-out questions of the evaluate stage: 2 letter questions and one
spelling question in the canonical wording, and the same again in held-out wordings (same
prompt, generation and parsing). The result holds each metric with its n and 95 %
interval, per wording and per wordfreq frequency band, and spelling exact match by length.
"""

from __future__ import annotations

import random

from spelltune.task.questions import band_of, held_out_items, ranked_words, split_words

CATEGORIES = ("nouns", "verbs", "adjectives")
LISTS = {"common": "pyspellchecker English frequency dictionary, most frequent first",
         "wonderwords": "wonderwords " + "+".join(CATEGORIES)}


def _listed(name: str) -> list[str]:
    if name == "common":
        from spellchecker import SpellChecker

        counts = SpellChecker().word_frequency.dictionary
        return sorted(counts, key=lambda w: (-counts[w], w))
    from wonderwords import RandomWord

    return sorted({w for c in CATEGORIES for w in RandomWord().filter(include_categories=[c])})


def training_words(data) -> set[str]:
    """The words `data`'s training split holds."""
    pieces = ()
    if data.token_pieces:
        from spelltune.modeling.pieces import alphabetic_pieces

        pieces = alphabetic_pieces()
    return set(split_words(ranked_words(data.min_word_length, data.max_word_length), data, pieces)["train"])


def outside_words(n: int, data, name: str = "common", seed: int = 0, trained_too: bool = False) -> list[str]:
    """`n` words of list `name`, a-z only, in the length range of `data`, that are not
    training words of our splits (`trained_too`: trained ones included, as users meet
    them): the common list's `n` most frequent such words, or a seeded sample of the
    wonderwords lists."""
    min_len, max_len = data.min_word_length, data.max_word_length
    trained = set() if trained_too else training_words(data)
    words = [w for w in dict.fromkeys(_listed(name)) if w.isascii() and w.isalpha() and w.islower()
             and min_len <= len(w) <= max_len and w not in trained]
    if len(words) < n:
        raise ValueError(f"--words {n}: only {len(words)} outside words of length {min_len}-{max_len} in --list {name}")
    return words[:n] if name == "common" else random.Random(seed).sample(words, n)


def outside_items(n_words: int, data, separator: str, name: str = "common", trained_too: bool = False) -> list[dict]:
    """The held-out questions of the evaluate stage for `n_words` outside words, each with
    its wordfreq band where it has one ("rare" beyond wordfreq's 30,000) and, with
    `trained_too`, whether it is a training word."""
    rng = random.Random(0)
    ranks = ranked_words(data.min_word_length, data.max_word_length)
    trained = training_words(data) if trained_too else set()
    return [{**q, "band": band_of(ranks[w]) if w in ranks else "rare", "trained": w in trained}
            for w in outside_words(n_words, data, name, trained_too=trained_too)
            for q in held_out_items(w, separator, rng)]


def summary(rows: list[dict], label: str, name: str = "common") -> dict:
    """Each metric with its n and 95 % interval, per wording and band, and spelling exact match by length."""
    from spelltune.task.scoring import breakdown, details, group_details

    by_length = breakdown(rows)["by_length"]
    trained = {kind: details([r for r in rows if r.get("trained") == (kind == "trained")])
               for kind in ("trained", "never_trained")} if any(r.get("trained") for r in rows) else {}
    return {"words": len({r["word"] for r in rows}), "source": LISTS[name], "adapter": label, **details(rows),
            "groups": group_details(rows), **({"by_training": trained} if trained else {}),
            "spelling_exact_match_by_length": {k: v["spelling_exact_match"] for k, v in by_length.items()}}
