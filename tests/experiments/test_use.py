"""The question parsing of `spelltune ask` / `predict` (experiments/use.py), without a model.
(ask, predict, card and export on trained adapters: e2e/test_use.py.)"""

from __future__ import annotations

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
