"""The spelling task: words from a real word list, questions, answers, splits by word.

Everything here is deterministic from `data.seed` and pure Python (no torch), so tests
and the prepare stage run it cheaply.

Leakage rule (tested in tests/task/test_questions.py, enforced by `check_no_leakage` in prepare): a
held-out word (validation or test) is never a training word, in any task or wording and
in any letter case, nor a tokenizer piece trained by token-level training
(`data.token_pieces`); the held-out wordings (task/wordings.py HELD_OUT) are never used in
training.
"""

from __future__ import annotations

import random

from spelltune.params import DataParams
from spelltune.paths import SPLITS
from spelltune.task import wordings

# The word list is cut to the most frequent words first: the model has seen those.
WORDLIST_POOL = 30_000
# Frequency bands by wordfreq rank (1 = most frequent), each up to its rank: users ask
# mostly about common words, which the tokenizer keeps whole, and rare ones it cuts up.
BANDS = {"common": 2_000, "mid": 10_000, "rare": WORDLIST_POOL}
# The share of each held-out split's words taken from each band (stratified, so that every
# band has enough words for an interval; the common band is the set users meet most).
HELD_OUT_BAND_SHARES = {"common": 0.5, "mid": 0.25, "rare": 0.25}
# The vocabulary a user meets: the most frequent words of the length range, trained and
# held-out words alike (data/vocabulary.jsonl), `data.vocabulary_sample` words of each (a
# set no larger is scored whole); each word gets one spelling and one letter question.
VOCABULARY = {"top1k": 1_000, "top5k": 5_000}
# How much of its own training set a run learned: a seeded sample of its training questions.
TRAIN_SAMPLE = 400


def band_of(rank: int) -> str:
    return next(name for name, top in BANDS.items() if rank <= top)


def ranked_words(min_len: int, max_len: int) -> dict[str, int]:
    """Frequent English words, lowercase a-z only, with their wordfreq rank, most frequent first."""
    from wordfreq import top_n_list

    words: dict[str, int] = {}
    for rank, w in enumerate(top_n_list("en", WORDLIST_POOL), 1):
        if w.isascii() and w.isalpha() and w.islower() and min_len <= len(w) <= max_len:
            words.setdefault(w, rank)
    return words


def candidate_words(min_len: int, max_len: int) -> list[str]:
    """Frequent English words, lowercase a-z only, in frequency order."""
    return list(ranked_words(min_len, max_len))


def band_counts(n: int) -> dict[str, int]:
    """How many of a held-out split's `n` words come from each band (they add up to n)."""
    common = round(n * HELD_OUT_BAND_SHARES["common"])
    mid = round(n * HELD_OUT_BAND_SHARES["mid"])
    return {"common": common, "mid": mid, "rare": n - common - mid}


def split_words(ranks: dict[str, int], params: DataParams, pieces=()) -> dict[str, list[str]]:
    """Shuffle the word list once with `data.seed`; validation, then test take their words
    band by band (HELD_OUT_BAND_SHARES), then training takes `train_words` of the rest
    (`data.train_sampling`: common_first takes every remaining common word first, frequency
    the most frequent remaining words first), then
    the first `data.token_pieces` of the tokenizer's `pieces` that are in the length range
    and not yet in any split. The held-out words stay the same whatever the training params
    are, so experiments over them are scored on the same items."""
    shuffled = list(ranks)
    random.Random(params.seed).shuffle(shuffled)
    by_band = {name: [w for w in shuffled if band_of(ranks[w]) == name] for name in BANDS}
    out: dict[str, list[str]] = {}
    taken = {name: 0 for name in BANDS}
    for split, n in (("validation", params.validation_words), ("test", params.test_words)):
        out[split] = []
        for name, k in band_counts(n).items():
            if taken[name] + k > len(by_band[name]):
                raise ValueError(f"data.validation_words + test_words: the {name} band (wordfreq rank <= "
                                 f"{BANDS[name]}) has only {len(by_band[name])} words of length "
                                 f"{params.min_word_length}-{params.max_word_length}")
            out[split] += by_band[name][taken[name] : taken[name] + k]
            taken[name] += k
    rest = {name: words[taken[name] :] for name, words in by_band.items()}
    if params.train_sampling == "common_first":
        others = set(rest["mid"]) | set(rest["rare"])
        pool = rest["common"] + [w for w in shuffled if w in others]
    elif params.train_sampling == "frequency":
        held = set(out["validation"]) | set(out["test"])
        pool = [w for w in ranks if w not in held]
    else:
        held = set(out["validation"]) | set(out["test"])
        pool = [w for w in shuffled if w not in held]
    if len(pool) < params.train_words:
        needed = params.validation_words + params.test_words + params.train_words
        raise ValueError(
            f"data.train_words + validation_words + test_words = {needed}: only {len(ranks)} words of length "
            f"{params.min_word_length}-{params.max_word_length} are in the word list"
        )
    out["train"] = pool[: params.train_words]
    if params.token_pieces:
        taken_words = {w for words in out.values() for w in words}
        extra = [p for p in dict.fromkeys(p.lower() for p in pieces)
                 if params.min_word_length <= len(p) <= params.max_word_length and p not in taken_words]
        if len(extra) < params.token_pieces:
            raise ValueError(f"data.token_pieces = {params.token_pieces}: the tokenizer has only {len(extra)} "
                             f"alphabetic pieces of length {params.min_word_length}-{params.max_word_length} "
                             "that are not already words of a split")
        out["train"] += extra[: params.token_pieces]
    return out


def letter_question(word: str, position: int) -> dict:
    """position is 1-based; the last letter is asked as 'last'. The canonical wording."""
    return {
        "question": wordings.canonical_question("letter_position", word, position),
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
        "question": wordings.canonical_question("spelling", word),
        "answer": separator.join(word),
        "word": word,
        "task": "spelling",
        "position": None,
    }


# Held-out words always get these questions, whatever the training mix, so that every
# experiment is scored on the same items: each in the canonical wording and again in a
# held-out wording (the same word, task and position: a paired comparison).
HELD_OUT_TASKS = ("letter_position", "spelling")
HELD_OUT_LETTER_QUESTIONS = 2
ITEMS_PER_HELD_OUT_WORD = 2 * (HELD_OUT_LETTER_QUESTIONS + 1)


def questions_for(word: str, tasks, letter_questions: int, separator: str, rng: random.Random) -> list[dict]:
    """The canonical questions for `word` (wording "canonical")."""
    items = []
    if "letter_position" in tasks:
        # Always ask for the last letter once per word when there is room for more.
        k = min(letter_questions, len(word))
        positions = rng.sample(range(1, len(word)), k - 1) + [len(word)] if k > 1 else [rng.randint(1, len(word))]
        items += [letter_question(word, p) for p in sorted(positions)]
    if "spelling" in tasks:
        items.append(spelling_question(word, separator))
    return [{**it, "wording": "canonical"} for it in items]


def reworded(item: dict, templates: dict[str, tuple[str, ...]], kind: str, rng: random.Random) -> dict:
    """`item` asked in one of `templates` (wording `kind`: "training" or "held_out")."""
    question, index = wordings.varied_question(item["task"], item["word"], item["position"],
                                               templates[item["task"]], rng)
    return {**item, "question": question, "wording": kind, "template": index}


def training_items(word: str, params: DataParams, rng: random.Random) -> list[dict]:
    """The training questions of one word: each canonical with `data.canonical_share`, else
    in a random training wording."""
    items = questions_for(word, params.tasks, params.letter_questions_per_word, params.spelling_separator, rng)
    return [it if rng.random() < params.canonical_share else reworded(it, wordings.TRAINING, "training", rng)
            for it in items]


def held_out_items(word: str, separator: str, rng: random.Random) -> list[dict]:
    """The canonical questions of a held-out word, then the same ones in held-out wordings."""
    canonical = questions_for(word, HELD_OUT_TASKS, HELD_OUT_LETTER_QUESTIONS, separator, rng)
    return canonical + [reworded(it, wordings.HELD_OUT, "held_out", rng) for it in canonical]


def build_splits(params: DataParams, ranks: dict[str, int] | None = None, pieces=()) -> dict[str, list[dict]]:
    """Every split's items; `pieces`: the tokenizer's alphabetic pieces, for `data.token_pieces`."""
    ranks = ranked_words(params.min_word_length, params.max_word_length) if ranks is None else ranks
    by_split = split_words(ranks, params, pieces)
    vocabulary = set(list(ranks)[: params.vocabulary_words])
    out = {}
    for i, name in enumerate(SPLITS):
        rng = random.Random(params.seed * 1000 + i)
        items = []
        for k, w in enumerate(by_split[name]):
            if name != "train":
                asked = held_out_items(w, params.spelling_separator, rng)
            else:
                times = repeats_of(w, ranks, vocabulary, params)
                asked = [it for _ in range(times) for it in training_items(w, params, rng)]
            # Training words past train_words are tokenizer pieces: band "piece", a rank where they have one.
            band = "piece" if name == "train" and k >= params.train_words else band_of(ranks[w])
            items += [{**it, "rank": ranks.get(w), "band": band} for it in asked]
        rng.shuffle(items)
        out[name] = items
    check_no_leakage(out)
    return out


def repeats_of(word: str, ranks: dict[str, int], vocabulary: set[str], params: DataParams) -> int:
    """How many times a training word's questions are drawn: `data.vocabulary_repeats` for
    the `data.vocabulary_words` most frequent words, `data.common_repeats` for the other
    common ones, else once."""
    if word in vocabulary:
        return params.vocabulary_repeats
    return params.common_repeats if word in ranks and band_of(ranks[word]) == "common" else 1


def vocabulary_items(splits: dict[str, list[dict]], params: DataParams, ranks: dict[str, int]) -> list[dict]:
    """data/vocabulary.jsonl: the VOCABULARY words (trained and held-out alike) and TRAIN_SAMPLE
    of the training questions, each row with the `groups` it is scored in (top1k,
    top1k_trained, top1k_held_out, ..., train_questions). The words and their questions
    depend on `data.seed` and the length range only, so that every experiment is scored on
    the same vocabulary items; which of them are trained depends on the training params."""
    if not params.vocabulary_sample:
        return []
    rng = random.Random(params.seed * 1000 + 7)
    ordered = list(ranks)
    chosen = {}
    for name, top in VOCABULARY.items():
        words = ordered[:top]
        k = min(params.vocabulary_sample, len(words))
        chosen[name] = set(words if k == len(words) else rng.sample(words, k))
    trained = {it["word"] for it in splits["train"]}
    rows = []
    for w in (w for w in ordered if any(w in ws for ws in chosen.values())):
        kind = "trained" if w in trained else "held_out"
        groups = [g for name, ws in chosen.items() if w in ws for g in (name, f"{name}_{kind}")]
        asked = [letter_question(w, rng.randint(1, len(w))), spelling_question(w, params.spelling_separator)]
        rows += [{**it, "wording": "canonical", "rank": ranks[w], "band": band_of(ranks[w]), "trained": w in trained,
                  "groups": groups} for it in asked]
    k = min(TRAIN_SAMPLE, params.vocabulary_sample, len(splits["train"]))
    sample = random.Random(params.seed * 1000 + 8).sample(splits["train"], k)
    rows += [{**it, "trained": True, "groups": ["train_questions"]} for it in sample]
    return rows


def check_no_leakage(splits: dict[str, list[dict]]) -> None:
    """The leakage rule (module docstring); raises ValueError naming the first breach."""
    train_words = {it["word"].lower() for it in splits["train"]}
    held_out_questions = {q for qs in wordings.HELD_OUT.values() for q in qs}
    for name in SPLITS[1:]:
        leaked = sorted(train_words & {it["word"].lower() for it in splits[name]})
        if leaked:
            raise ValueError(f"leakage: {len(leaked)} {name} words are also training words, e.g. {leaked[0]!r}")
    for it in splits["train"]:
        if it.get("wording") == "held_out" or (
            it.get("wording") == "training" and wordings.TRAINING[it["task"]][it["template"]] in held_out_questions
        ):
            raise ValueError(f"leakage: a training question uses a held-out wording: {it['question']!r}")
