"""The spelling task: words from a real word list, questions, answers, splits by word.

Everything here is deterministic from `data.seed` and pure Python (no torch), so tests
and the prepare stage run it cheaply.
"""

from __future__ import annotations

import random

from spelltune.params import DataParams
from spelltune.paths import SPLITS

# The word list is cut to the most frequent words first: the model has seen those.
WORDLIST_POOL = 30_000


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def candidate_words(min_len: int, max_len: int) -> list[str]:
    """Frequent English words, lowercase a-z only, in frequency order."""
    from wordfreq import top_n_list

    seen, words = set(), []
    for w in top_n_list("en", WORDLIST_POOL):
        if w.isascii() and w.isalpha() and w.islower() and min_len <= len(w) <= max_len and w not in seen:
            seen.add(w)
            words.append(w)
    return words


def split_words(words: list[str], params: DataParams) -> dict[str, list[str]]:
    """Shuffle the word list once with `data.seed` and cut it: validation first, then test,
    then training words, so that no word is in two splits and the held-out words stay the
    same whatever `data.train_words` is (experiments over it compare on the same items)."""
    needed = params.validation_words + params.test_words + params.train_words
    if len(words) < needed:
        raise ValueError(
            f"data.train_words + validation_words + test_words = {needed}: only {len(words)} words of length "
            f"{params.min_word_length}-{params.max_word_length} are in the word list"
        )
    shuffled = list(words)
    random.Random(params.seed).shuffle(shuffled)
    n_val, n_test = params.validation_words, params.test_words
    return {
        "validation": shuffled[:n_val],
        "test": shuffled[n_val : n_val + n_test],
        "train": shuffled[n_val + n_test : needed],
    }


def letter_question(word: str, position: int) -> dict:
    """position is 1-based; the last letter is asked as 'last'."""
    label = "last" if position == len(word) else ordinal(position)
    return {
        "question": f"What is the {label} letter of '{word}'?",
        "answer": word[position - 1],
        "word": word,
        "task": "letter_position",
        "position": position,
    }


def spelled_letter_answer(word: str, position: int) -> str:
    """'b1 a2 n3 = n': counting along the spelled word turns "the 3rd letter" into copying
    the number 3, which a small model does far more reliably than indexing a whole token."""
    return " ".join(f"{c}{i}" for i, c in enumerate(word[:position], 1)) + f" = {word[position - 1]}"


def answer_text(item: dict, letter_answer: str = "direct") -> str:
    """What the model is trained to reply. `item["answer"]` stays the letter that scores."""
    if item["task"] == "letter_position" and letter_answer == "spelled":
        return spelled_letter_answer(item["word"], item["position"])
    return item["answer"]


def spelling_question(word: str, separator: str = "-") -> dict:
    return {
        "question": f"Spell '{word}' letter by letter.",
        "answer": separator.join(word),
        "word": word,
        "task": "spelling",
        "position": None,
    }


# Held-out words always get these questions, whatever the training mix, so that every
# experiment is scored on the same items.
HELD_OUT_TASKS = ("letter_position", "spelling")
HELD_OUT_LETTER_QUESTIONS = 2


def questions_for(word: str, tasks, letter_questions: int, separator: str, rng: random.Random) -> list[dict]:
    items = []
    if "letter_position" in tasks:
        # Always ask for the last letter once per word when there is room for more.
        k = min(letter_questions, len(word))
        positions = rng.sample(range(1, len(word)), k - 1) + [len(word)] if k > 1 else [rng.randint(1, len(word))]
        items += [letter_question(word, p) for p in sorted(positions)]
    if "spelling" in tasks:
        items.append(spelling_question(word, separator))
    return items


def build_splits(params: DataParams, words: list[str] | None = None) -> dict[str, list[dict]]:
    words = candidate_words(params.min_word_length, params.max_word_length) if words is None else words
    by_split = split_words(words, params)
    out = {}
    for i, name in enumerate(SPLITS):
        rng = random.Random(params.seed * 1000 + i)
        if name == "train":
            tasks, letters = params.tasks, params.letter_questions_per_word
        else:
            tasks, letters = HELD_OUT_TASKS, HELD_OUT_LETTER_QUESTIONS
        items = [q for w in by_split[name] for q in questions_for(w, tasks, letters, params.spelling_separator, rng)]
        rng.shuffle(items)
        out[name] = items
    return out
