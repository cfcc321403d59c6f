"""The task data (task/questions.py): deterministic, split by word, correct answers, loadable
as JSON lines (pandas)."""

from __future__ import annotations

import json

import pytest

from conftest import ROOT
from spelltune.files import write_jsonl
from spelltune.params import DataParams
from spelltune.task import wordings
from spelltune.task.questions import (
    ITEMS_PER_HELD_OUT_WORD,
    SPLITS,
    band_of,
    build_splits,
    candidate_words,
    check_no_leakage,
    ranked_words,
)
from spelltune.task.wordings import ordinal

SMALL = DataParams(train_words=320, validation_words=40, test_words=40, canonical_share=0.3)


@pytest.fixture(scope="module")
def splits():
    return build_splits(SMALL)


def test_words_come_from_a_real_word_list():
    words = candidate_words(3, 10)
    assert len(words) > 10_000
    assert {"the", "banana", "house"} <= set(words)
    assert all(w.isascii() and w.isalpha() and w.islower() and 3 <= len(w) <= 10 for w in words)


def test_same_seed_same_data_other_seed_other_data(splits):
    assert build_splits(SMALL) == splits
    assert build_splits(SMALL.model_copy(update={"seed": 1})) != splits


def test_no_word_is_in_two_splits(splits):
    words = {name: {it["word"] for it in splits[name]} for name in SPLITS}
    assert not words["train"] & words["validation"]
    assert not words["train"] & words["test"]
    assert not words["validation"] & words["test"]
    assert len(words["train"]) == 320 and len(words["validation"]) == 40 and len(words["test"]) == 40


def test_answers_are_correct(splits):
    items = [it for name in SPLITS for it in splits[name]]
    assert {it["task"] for it in items} == {"letter_position", "spelling"}
    for it in items:
        word = it["word"]
        assert word in it["question"].lower()
        if it["task"] == "spelling":
            assert it["answer"] == "-".join(word) and it["position"] is None
        else:
            assert it["answer"] == word[it["position"] - 1]
        if it["wording"] == "canonical":
            if it["task"] == "spelling":
                assert it["question"] == f"Spell '{word}' letter by letter."
            else:
                label = "last" if it["position"] == len(word) else ordinal(it["position"])
                assert it["question"] == f"What is the {label} letter of '{word}'?"


def test_every_word_gets_its_last_letter_asked(splits):
    for name in SPLITS:
        last = {it["word"] for it in splits[name]
                if it["task"] == "letter_position" and it["position"] == len(it["word"])}
        assert last == {it["word"] for it in splits[name]}


def test_held_out_words_are_stratified_by_frequency_band(splits):
    """Half of each held-out split is common words (wordfreq rank <= 2,000), a quarter each
    mid and rare; the band is the word's real rank's."""
    ranks = ranked_words(3, 10)
    for name, n in (("validation", 40), ("test", 40)):
        bands = {}
        for it in splits[name]:
            assert it["rank"] == ranks[it["word"]] and it["band"] == band_of(it["rank"])
            bands.setdefault(it["band"], set()).add(it["word"])
        assert {b: len(w) for b, w in bands.items()} == {"common": n // 2, "mid": n // 4, "rare": n // 4}
        assert len(splits[name]) == n * ITEMS_PER_HELD_OUT_WORD


def test_each_held_out_question_is_asked_again_in_a_held_out_wording(splits):
    """The same word, task and position, once canonical and once in a held-out wording: a
    paired comparison of the two."""
    for name in ("validation", "test"):
        key = lambda it: (it["word"], it["task"], it["position"])  # noqa: E731
        canonical = sorted(key(it) for it in splits[name] if it["wording"] == "canonical")
        held_out = [it for it in splits[name] if it["wording"] == "held_out"]
        assert canonical == sorted(key(it) for it in held_out)
        assert {it["template"] for it in held_out} == set(range(len(wordings.HELD_OUT["spelling"])))


def test_training_mixes_wordings_and_surface_forms(splits):
    train = splits["train"]
    share = sum(it["wording"] == "canonical" for it in train) / len(train)
    assert abs(share - SMALL.canonical_share) < 0.05
    varied = [it for it in train if it["wording"] == "training"]
    assert {it["template"] for it in varied} == set(range(len(wordings.TRAINING["spelling"])))
    assert any('"' in it["question"] for it in varied) and any(it["word"].upper() in it["question"] for it in varied)
    assert any(it["task"] == "letter_position" and wordings.ORDINAL_WORDS[it["position"] - 1] in it["question"]
               for it in varied if it["task"] == "letter_position")
    only_canonical = build_splits(SMALL.model_copy(update={"canonical_share": 1.0}))
    assert {it["wording"] for it in only_canonical["train"]} == {"canonical"}


def test_the_leakage_rule_holds_on_the_default_data():
    """No held-out word (any case) is a training word, and no training question uses a
    held-out wording, on the data the default params.yaml builds."""
    from spelltune.params import load

    splits = build_splits(load(ROOT / "params.yaml").data)
    train = {it["word"].lower() for it in splits["train"]}
    for name in ("validation", "test"):
        assert not train & {it["word"].lower() for it in splits[name]}
    held_out_shapes = {q for qs in wordings.HELD_OUT.values() for q in qs}
    assert not held_out_shapes & {q for qs in wordings.TRAINING.values() for q in qs}
    assert {it["wording"] for it in splits["train"]} <= {"canonical", "training"}
    assert len({it["word"] for it in splits["test"] if it["band"] == "common"}) >= 300


def test_a_leak_fails_the_check(splits):
    leaked = {**splits, "train": splits["train"] + [splits["test"][0]]}
    with pytest.raises(ValueError, match="leakage: 1 test words are also training words"):
        check_no_leakage(leaked)
    reworded = {**splits, "train": splits["train"] + [{**splits["test"][0], "wording": "held_out"}]}
    with pytest.raises(ValueError, match="leakage"):
        check_no_leakage(reworded)


def test_common_first_trains_every_common_word_not_held_out():
    common_first = build_splits(SMALL.model_copy(update={"train_sampling": "common_first", "train_words": 2000}))
    uniform = build_splits(SMALL.model_copy(update={"train_sampling": "uniform", "train_words": 2000}))
    held = {it["word"] for name in ("validation", "test") for it in common_first[name]}
    common = {w for w, r in ranked_words(3, 10).items() if band_of(r) == "common"} - held
    assert common <= {it["word"] for it in common_first["train"]}
    assert len(common & {it["word"] for it in uniform["train"]}) < len(common) / 2
    assert common_first["test"] == uniform["test"]


def test_common_repeats_draws_common_words_questions_again_and_nothing_else():
    once = build_splits(SMALL.model_copy(update={"train_sampling": "common_first"}))
    thrice = build_splits(SMALL.model_copy(update={"train_sampling": "common_first", "common_repeats": 3}))

    def per_band(items):
        return {band: sum(it["band"] == band for it in items) for band in ("common", "mid", "rare")}

    before, after = per_band(once["train"]), per_band(thrice["train"])
    assert after["common"] == 3 * before["common"] and (after["mid"], after["rare"]) == (before["mid"], before["rare"])
    assert {it["word"] for it in once["train"]} == {it["word"] for it in thrice["train"]}
    assert once["validation"] == thrice["validation"] and once["test"] == thrice["test"]


def test_the_training_mix_leaves_the_held_out_items_alone(splits):
    """Experiments over the training mix are scored on the same validation and test items."""
    only_spelling = build_splits(SMALL.model_copy(update={"tasks": ["spelling"], "letter_questions_per_word": 1}))
    assert {it["task"] for it in only_spelling["train"]} == {"spelling"}
    assert only_spelling["validation"] == splits["validation"] and only_spelling["test"] == splits["test"]


def test_held_out_words_do_not_depend_on_the_number_of_training_words(splits):
    more = build_splits(SMALL.model_copy(update={"train_words": 600}))
    assert more["validation"] == splits["validation"] and more["test"] == splits["test"]
    assert {it["word"] for it in splits["train"]} < {it["word"] for it in more["train"]}


def test_spelling_separator_one_token_per_letter():
    from spelltune.task.scoring import score_item

    spaced = build_splits(SMALL.model_copy(update={"spelling_separator": " "}))
    item = next(it for it in spaced["test"] if it["task"] == "spelling")
    assert item["answer"] == " ".join(item["word"])
    assert score_item(item, item["answer"])["correct"] and score_item(item, "-".join(item["word"]))["correct"]


def test_spelled_letter_answers_count_up_to_the_letter_asked(splits):
    from spelltune.task.questions import answer_text, letter_question
    from spelltune.task.scoring import score_item

    assert answer_text(letter_question("banana", 3), "spelled") == "b1 a2 n3 = n"
    assert answer_text(letter_question("banana", 6), "spelled") == "b1 a2 n3 a4 n5 a6 = a"
    item = next(it for it in splits["test"] if it["task"] == "letter_position")
    assert answer_text(item, "direct") == item["answer"]
    assert score_item(item, answer_text(item, "spelled"))["correct"]
    spelling = next(it for it in splits["test"] if it["task"] == "spelling")
    assert answer_text(spelling, "spelled") == spelling["answer"]
    # The format is how the model is taught to reply, not what is asked: same data files.
    assert build_splits(SMALL.model_copy(update={"letter_answer": "spelled"})) == splits


def test_too_few_words_is_a_clear_error():
    with pytest.raises(ValueError, match="the common band .* has only 3 words"):
        build_splits(DataParams(train_words=500, validation_words=100, test_words=300), {"cat": 1, "dog": 2, "emu": 3})
    with pytest.raises(ValueError, match="train_words \\+ validation_words \\+ test_words = 30000: only"):
        build_splits(DataParams(train_words=29100, validation_words=300, test_words=600))


def test_jsonl_loads_with_pandas(tmp_path, splits):
    import pandas as pd

    for name in SPLITS:
        write_jsonl(splits[name], tmp_path / f"{name}.jsonl")
    frames = {n: pd.read_json(tmp_path / f"{n}.jsonl", lines=True) for n in SPLITS}
    assert len(frames["train"]) == len(splits["train"])
    assert {"question", "answer", "word", "task", "position", "wording", "rank", "band"} <= set(frames["train"].columns)
    assert json.loads((tmp_path / "train.jsonl").read_text().splitlines()[0]) == splits["train"][0]


def test_token_level_training_adds_the_tokenizers_pieces_and_never_a_held_out_word(tiny_model):
    """data.token_pieces: the real tokenizer's alphabetic pieces train as extra words
    (band "piece"); a held-out word that is itself one token is never among them."""
    from spelltune.modeling.pieces import alphabetic_pieces

    pieces = alphabetic_pieces(tiny_model)
    assert len(pieces) > 20_000 and {"ion", "banana"} <= set(pieces)
    params = SMALL.model_copy(update={"token_pieces": 500})
    with_pieces = build_splits(params, pieces=pieces)
    plain = build_splits(SMALL)
    assert with_pieces["validation"] == plain["validation"] and with_pieces["test"] == plain["test"]
    trained = [it for it in with_pieces["train"] if it["band"] == "piece"]
    assert len({it["word"] for it in trained}) == 500
    held = {it["word"] for name in ("validation", "test") for it in plain[name]}
    single_token_held = held & set(pieces)
    assert single_token_held, "the check needs held-out words that are single tokens"
    assert not single_token_held & {it["word"] for it in with_pieces["train"]}
    # A piece that were a held-out word fails the leakage check.
    leaked = {**with_pieces, "train": with_pieces["train"] + [{**trained[0], "word": sorted(single_token_held)[0]}]}
    with pytest.raises(ValueError, match="leakage"):
        check_no_leakage(leaked)
    with pytest.raises(ValueError, match="data.token_pieces = 20000: the tokenizer has only"):
        build_splits(SMALL.model_copy(update={"token_pieces": 20_000}), pieces=pieces[:1000])
