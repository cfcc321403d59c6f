"""Question wordings (task/wordings.py): free-form questions read back, ordinals."""

from __future__ import annotations

import pytest

from spelltune.task import wordings
from spelltune.task.questions import candidate_words
from spelltune.task.wordings import ordinal


@pytest.mark.parametrize("kind", ["TRAINING", "HELD_OUT"])
def test_free_form_questions_are_read_back(kind):
    """ask/predict read task, word and position from a question in any wording (the few
    misses are words that are themselves wording words, e.g. 'spell' or 'letter')."""
    import random

    rng = random.Random(0)
    words = candidate_words(3, 10)[:3000:7]
    misses = total = 0
    for task, templates in getattr(wordings, kind).items():
        for w in words:
            position = rng.randint(1, len(w)) if task == "letter_position" else None
            question, _ = wordings.varied_question(task, w, position, templates, rng)
            total += 1
            misses += wordings.read_question(question) != (task, w, position)
    assert misses / total < 0.01


def test_free_form_examples():
    read = wordings.read_question
    assert read("What is the third letter of banana?") == ("letter_position", "banana", 3)
    assert read("How do you spell Necessary?") == ("spelling", "necessary", None)
    assert read('What\'s the final letter of "zebra"?') == ("letter_position", "zebra", 5)
    assert read("What is the 3rd letter of 'banana'?") == ("letter_position", "banana", 3)
    assert read("What is the 12th letter of cat?") is None
    assert read("What time is it?") is None


def test_ordinals():
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd",
    ]
