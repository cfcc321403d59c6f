"""The question parsing of `spelltune ask` / `predict` (experiments/use.py), without a model.
(ask, chat, predict and export as a user runs them: cli/test_use.py; on trained adapters: e2e/test_use.py.)"""

from __future__ import annotations

import json

import pytest

from spelltune.experiments.adapters import UseError
from spelltune.experiments.use import item_for_question, read_inputs


def test_questions_become_evaluation_items():
    item = item_for_question("What is the 3rd letter of 'banana'?")
    assert (item["task"], item["word"], item["position"], item["answer"]) == ("letter_position", "banana", 3, "n")
    assert item_for_question("What is the last letter of 'cat'?")["answer"] == "t"
    assert item_for_question("Spell 'cat' letter by letter.", " ")["answer"] == "c a t"
    assert item_for_question("How are you?")["task"] == "other"
    assert item_for_question("What is the 9th letter of 'cat'?")["task"] == "other"
    # In the user's own words: asked as typed, scored as the item it is.
    item = item_for_question("what's the third letter of Banana?")
    assert (item["task"], item["word"], item["position"], item["question"]) == (
        "letter_position", "banana", 3, "what's the third letter of Banana?")
    assert item_for_question("How do you spell necessary?", " ")["answer"] == " ".join("necessary")


def test_read_inputs(tmp_path):
    words = tmp_path / "w.txt"
    words.write_text("# my words\nCat\n")
    assert [it["question"] for it in read_inputs(words)] == [
        "What is the 1st letter of 'cat'?", "What is the 2nd letter of 'cat'?", "What is the last letter of 'cat'?",
        "Spell 'cat' letter by letter."]
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"question": "Spell \'dog\' letter by letter."}\n{"word": "ox"}\n')
    assert [it["line"] for it in read_inputs(questions)] == [1, 2, 2, 2]
    questions.write_text('{"question": "Spell \'dog\' letter by letter."}\n[1, 2]\n')
    with pytest.raises(UseError, match=r"q.jsonl line 2: expected a JSON object"):
        read_inputs(questions)


def test_questions_out_of_scope_are_free_and_every_wording_still_reads():
    """Counting questions name letters but are not spelling ones; every training and held-out
    wording, in every surface form, stays the item it is (and a word like 'count' is a word)."""
    import random

    from spelltune.task.wordings import HELD_OUT, TRAINING, varied_question

    for question in ("hello", "How many letters are in 'apple'?", "Count the letters of banana.",
                     "What is the length of 'zebra'?", "How long is the word 'cat'?"):
        assert item_for_question(question)["task"] == "other", question
    assert item_for_question("Spell 'count' letter by letter.")["word"] == "count"
    assert item_for_question("How do you spell length?")["word"] == "length"
    rng = random.Random(0)
    for templates in (TRAINING, HELD_OUT):
        for task, wordings in templates.items():
            for _ in range(200):
                question, _ = varied_question(task, "banana", 3 if task == "letter_position" else None, wordings, rng)
                item = item_for_question(question)
                assert (item["task"], item["word"]) == (task, "banana"), question


def test_a_word_longer_than_predicts_limit_is_refused_in_a_question(tmp_path):
    from spelltune.experiments.use import MAX_WORD_LETTERS

    with pytest.raises(UseError, match=rf"^ask: 'a{{20}}'\.\.\. has 10000 letters; at most {MAX_WORD_LETTERS}$"):
        item_for_question("Spell '" + "a" * 10_000 + "' letter by letter.")
    assert item_for_question("Spell '" + "a" * MAX_WORD_LETTERS + "' letter by letter.")["task"] == "spelling"
    questions = tmp_path / "q.jsonl"
    lines = ["Spell 'dog' letter by letter.", "Spell '" + "b" * 41 + "'."]
    questions.write_text("".join(json.dumps({"question": q}) + "\n" for q in lines))
    with pytest.raises(UseError, match=r"q.jsonl line 2: 'b{20}'\.\.\. has 41 letters; at most 40"):
        read_inputs(questions)


def test_inputs_are_checked_then_streamed(tmp_path):
    from spelltune.experiments.use import check_inputs, chunks, iter_inputs

    words = tmp_path / "w.txt"
    words.write_text("cat\n\nox\n" * 5)
    assert check_inputs(words) == 5 * (4 + 3)
    streamed = iter_inputs(words)
    assert next(streamed)["question"] == "What is the 1st letter of 'cat'?"  # one at a time, not a list
    assert [len(c) for c in chunks(iter_inputs(words), 8)] == [8, 8, 8, 8, 3]
    words.write_text("cat\n" * 3 + "x" * 2_000_000 + "\n")
    with pytest.raises(UseError, match=r"w.txt line 4: longer than 1,000,000 characters"):
        check_inputs(words)


def test_predict_output_is_never_its_input(tmp_path):
    import os

    from spelltune.experiments.use import check_output

    words = tmp_path / "words.txt"
    words.write_text("cat\n")
    os.link(words, tmp_path / "hard")
    (tmp_path / "soft").symlink_to(words)
    for out in ("hard", "soft", "words.txt"):
        with pytest.raises(UseError, match="that is the input file"):
            check_output(str(tmp_path / out), str(words))
    with pytest.raises(UseError, match="that is a directory"):
        check_output(str(tmp_path), str(words))
    check_output(str(tmp_path / "answers.jsonl"), str(words))
