"""Error analysis (experiments/error_analysis.py) on constructed predictions. (The `errors`
command on real experiments: e2e/test_compare.py.)"""

from __future__ import annotations

import pandas as pd
import pytest


def test_error_analysis_on_constructed_predictions():
    from spelltune.experiments.error_analysis import error_analysis

    rows = [
        {
            "question": "What is the 1st letter of 'cat'?",
            "answer": "c",
            "word": "cat",
            "task": "letter_position",
            "position": 1,
            "reply": "c",
            "correct": True,
            "cer": None,
        },
        {
            "question": "What is the last letter of 'cat'?",
            "answer": "t",
            "word": "cat",
            "task": "letter_position",
            "position": 3,
            "reply": "d",
            "correct": False,
            "cer": None,
        },
        {
            "question": "What is the last letter of 'bat'?",
            "answer": "t",
            "word": "bat",
            "task": "letter_position",
            "position": 3,
            "reply": "d",
            "correct": False,
            "cer": None,
        },
        {
            "question": "What is the 2nd letter of 'horse'?",
            "answer": "o",
            "word": "horse",
            "task": "letter_position",
            "position": 2,
            "reply": "o",
            "correct": True,
            "cer": None,
        },
        {
            "question": "Spell 'horse' letter by letter.",
            "answer": "h-o-r-s-e",
            "word": "horse",
            "task": "spelling",
            "position": None,
            "reply": "h-o-r-s-e",
            "correct": True,
            "cer": 0.0,
        },
        {
            "question": "Spell 'cat' letter by letter.",
            "answer": "c-a-t",
            "word": "cat",
            "task": "spelling",
            "position": None,
            "reply": "c-a-d",
            "correct": False,
            "cer": 1 / 3,
        },
    ]
    cut = {**rows[3], "question": "What is the 2nd letter of 'horse'? (cut)", "reply": "h1 o2 r3 s4 e5",
           "correct": False}  # counted past the position until the budget ran out: not "no letter"
    result = error_analysis(pd.DataFrame([{**r, "split": "test"} for r in [*rows, cut]]), "test")
    pairs = {(r.expected, r.predicted): r.count for r in result["confusions"].itertuples()}
    assert pairs[("o", "…")] == 1 and ("o", "∅") not in pairs
    result = error_analysis(pd.DataFrame([{**r, "split": "test"} for r in rows]), "test")
    top = result["confusions"].iloc[0]
    assert (top["expected"], top["predicted"], top["count"]) == ("t", "d", 3)  # two letter answers, one spelling
    assert result["by_position"].loc["last", "accuracy"] == 0 and result["by_position"].loc["1", "accuracy"] == 1
    assert list(result["by_position"].index) == ["1", "2", "last"]
    assert result["by_length"].loc[5, "spelling_exact_match"] == 1 and result["by_length"].loc[
        3, "letter_accuracy"
    ] == pytest.approx(1 / 3)
    assert result["by_letter"].index[0] == "t"
    worst = result["worst_words"]
    assert worst.iloc[-1]["word"] == "horse" and worst.iloc[0]["word"] == "bat"
    assert "→ 'd' (expected t)" in worst.iloc[0]["example"]
