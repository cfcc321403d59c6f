"""The task data: deterministic, split by word, correct answers, loadable as JSON lines (pandas)."""

from __future__ import annotations

import json

import pytest

from spelltune.files import write_jsonl
from spelltune.params import DataParams
from spelltune.task.questions import SPLITS, build_splits, candidate_words, ordinal

SMALL = DataParams(train_words=320, validation_words=40, test_words=40)


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
        assert f"'{word}'" in it["question"]
        if it["task"] == "spelling":
            assert it["answer"] == "-".join(word) and it["position"] is None
        else:
            assert it["answer"] == word[it["position"] - 1]
            label = "last" if it["position"] == len(word) else ordinal(it["position"])
            assert it["question"] == f"What is the {label} letter of '{word}'?"


def test_every_word_gets_its_last_letter_asked(splits):
    for name in SPLITS:
        last = {it["word"] for it in splits[name]
                if it["task"] == "letter_position" and "last letter" in it["question"]}
        assert last == {it["word"] for it in splits[name]}


def test_ordinals():
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd",
    ]


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
    with pytest.raises(ValueError, match="validation_words \\+ test_words = 900: only 3 words"):
        build_splits(DataParams(train_words=500, validation_words=100, test_words=300), words=["cat", "dog", "emu"])


def test_jsonl_loads_with_pandas(tmp_path, splits):
    import pandas as pd

    for name in SPLITS:
        write_jsonl(splits[name], tmp_path / f"{name}.jsonl")
    frames = {n: pd.read_json(tmp_path / f"{n}.jsonl", lines=True) for n in SPLITS}
    assert len(frames["train"]) == len(splits["train"])
    assert set(frames["train"].columns) == {"question", "answer", "word", "task", "position"}
    assert json.loads((tmp_path / "train.jsonl").read_text().splitlines()[0]) == splits["train"][0]
