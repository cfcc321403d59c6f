"""Parsing replies and the task metrics (task/scoring.py)."""

from __future__ import annotations

import pytest

from spelltune.metric_names import EVAL_GROUPS
from spelltune.task.scoring import (
    GROUP_LABELS,
    breakdown,
    levenshtein,
    parse_letter,
    parse_spelling,
    score_item,
    summarize,
)

LETTER = {"task": "letter_position", "word": "banana", "answer": "n", "position": 3}
LAST = {"task": "letter_position", "word": "banana", "answer": "a", "position": 6}
SPELL = {"task": "spelling", "word": "banana", "answer": "b-a-n-a-n-a", "position": None}


@pytest.mark.parametrize(
    ("reply", "letter"),
    [
        ("n", "n"),
        ("'N'", "n"),
        ("n.", "n"),
        ("The 3rd letter of 'banana' is 'n'.", "n"),
        ("The third letter is N", "n"),
        ("b1 a2 n3 = n", "n"),
        ("b1 a2 n3 = N.", "n"),
        ("b1 a2 n3 =", None),
        ("The 3", None),
        ("banana", None),
        ("", None),
    ],
)
def test_parse_letter(reply, letter):
    assert parse_letter(reply) == letter


def test_parse_spelling():
    assert parse_spelling("b-a-n-a-n-a") == list("banana")
    assert parse_spelling("B, A, N, A, N, A") == list("banana")
    assert parse_spelling("banana") == ["banana"]


def test_levenshtein():
    assert levenshtein("banana", "banana") == 0
    assert levenshtein("banan", "banana") == 1
    assert levenshtein("bxnana", "banana") == 1
    assert levenshtein("", "abc") == 3


def test_score_item():
    assert score_item(LETTER, "n") == {"correct": True, "cer": None}
    assert score_item(LETTER, "a") == {"correct": False, "cer": None}
    assert score_item(SPELL, "b-a-n-a-n-a") == {"correct": True, "cer": 0.0}
    # The word itself is not a spelling, though all its letters are there.
    assert score_item(SPELL, "banana") == {"correct": False, "cer": 0.0}
    assert score_item(SPELL, "b-a-n-a-n") == {"correct": False, "cer": pytest.approx(1 / 6)}
    assert score_item(SPELL, "I cannot spell that word for you, sorry")["cer"] == 1.0


def rows(*pairs):
    return [{**item, **score_item(item, reply)} for item, reply in pairs]


def test_summarize():
    s = summarize(rows((LETTER, "n"), (LAST, "x"), (SPELL, "b-a-n-a-n-a"), (SPELL, "b-a-n-a-n")))
    assert s == {
        "letter_position_accuracy": 0.5,
        "spelling_exact_match": 0.5,
        "char_error_rate": pytest.approx(1 / 12),
        "n_items": 4,
    }


def test_summarize_without_a_task_gives_none():
    assert summarize(rows((LETTER, "n")))["spelling_exact_match"] is None


def test_breakdown_by_length_and_position():
    cat = {"task": "letter_position", "word": "cat", "answer": "c", "position": 1}
    b = breakdown(rows((LETTER, "n"), (LAST, "x"), (cat, "c"), (SPELL, "b-a-n-a-n-a")))
    assert list(b["by_length"]) == ["3", "6"]
    assert b["by_length"]["3"]["letter_position_accuracy"] == 1.0
    assert b["by_length"]["6"]["letter_position_accuracy"] == 0.5
    assert b["by_length"]["6"]["spelling_exact_match"] == 1.0
    assert list(b["by_position"]) == ["1", "3", "last"]
    assert b["by_position"]["last"]["letter_position_accuracy"] == 0.0


def test_details_give_each_metric_its_n_and_a_95_percent_interval():
    from spelltune.task.scoring import details

    rows = [{"task": "spelling", "correct": i < 30, "cer": 0.0 if i < 30 else 0.5} for i in range(100)]
    rows += [{"task": "letter_position", "correct": i < 150, "cer": None} for i in range(200)]
    found = details(rows)
    spelling = found["spelling_exact_match"]
    assert spelling["n"] == 100 and spelling["value"] == 0.3
    # Wilson's interval for 30 of 100 (as statsmodels and R's prop.test without correction give it)
    assert round(spelling["ci_low"], 4) == 0.2189 and round(spelling["ci_high"], 4) == 0.3958
    assert found["letter_position_accuracy"]["n"] == 200
    cer = found["char_error_rate"]
    assert cer["ci_low"] < cer["value"] == 0.35 < cer["ci_high"]
    assert details(rows) == found  # the bootstrap is seeded


def test_every_scored_subset_is_a_registered_metric_group():
    """A sweep or comparison checks val/GROUP/SCORE against metric_names.EVAL_GROUPS."""
    assert tuple(GROUP_LABELS) == EVAL_GROUPS
