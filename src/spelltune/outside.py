"""The outside check: a trained model on common English words from a list that is not in
this repository (the `wonderwords` package: its noun, verb and adjective lists), minus
every word of our own splits. A recipe that only works on our own wordfreq sample shows here.

    spelltune outside [--adapter checkpoints/adapter] [--words 600] [--out metrics/outside.json]

Each word gets the held-out questions of the evaluate stage (2 letter questions and one
spelling question, same prompt and parsing); the result holds each metric with its n and
95 % interval, and the spelling exact match by word length.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from spelltune.data import HELD_OUT_LETTER_QUESTIONS, HELD_OUT_TASKS, candidate_words, questions_for, split_words

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


def check(adapter: Path, n_words: int, params, out: Path) -> dict:
    from peft import PeftModel

    from spelltune.generation import generate_replies
    from spelltune.metrics import breakdown, details, score_item
    from spelltune.model import load_base_model

    words = outside_words(n_words, params.data)
    rng = random.Random(0)
    items = [q for w in words for q in questions_for(w, HELD_OUT_TASKS, HELD_OUT_LETTER_QUESTIONS,
                                                     params.data.spelling_separator, rng)]
    model, tokenizer = load_base_model()
    model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    replies = generate_replies(model, tokenizer, items, params.model.prompt_format, params.eval.batch_size)
    rows = [{**it, "reply": r, **score_item(it, r)} for it, r in zip(items, replies)]
    by_length = breakdown(rows)["by_length"]
    result = {"words": len(words), "source": "wonderwords " + "+".join(CATEGORIES), "adapter": str(adapter),
              **details(rows), "spelling_exact_match_by_length": {k: v["spelling_exact_match"] for k, v in by_length.items()}}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    (out.with_suffix(".jsonl")).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return result
