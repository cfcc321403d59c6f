"""Paired tests and parameter importance (experiments/significance.py) on constructed cases.
(The `significance` command on real experiments: e2e/test_compare.py.)"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest


def items(correct: list[bool], split: str = "test") -> pd.DataFrame:
    return pd.DataFrame({"question": [f"q{i}" for i in range(len(correct))], "split": split, "task": "letter_position",
                         "correct": correct})


def test_mcnemar_on_a_constructed_case():
    from spelltune.experiments.significance import paired_test

    # 40 items both get right, 10 only A, 2 only B, 8 neither. Exact McNemar: a binomial
    # test of 10 successes in 12 at 1/2, p = 2 * (C(12,10) + C(12,11) + C(12,12)) / 2**12.
    a = [True] * 40 + [True] * 10 + [False] * 2 + [False] * 8
    b = [True] * 40 + [False] * 10 + [True] * 2 + [False] * 8
    result = paired_test(items(a), items(b), "metrics/eval.json:test/letter_position_accuracy", "A", "B")
    assert (result.n, result.only_a, result.only_b) == (60, 10, 2)
    assert result.p_value == pytest.approx(2 * (66 + 12 + 1) / 4096)
    assert result.diff == pytest.approx(8 / 60)
    assert 0 < result.ci[0] < result.diff < result.ci[1]
    assert "the difference is real at p<0.05" in result.sentence()

    # 6 against 4 discordant items: p = 0.754, noise.
    a = [True] * 6 + [False] * 4 + [True] * 20
    b = [False] * 6 + [True] * 4 + [True] * 20
    result = paired_test(items(a), items(b), "test/letter_position_accuracy", "A", "B")
    assert result.p_value == pytest.approx(0.75390625)
    assert result.ci[0] < 0 < result.ci[1]
    assert "could be noise" in result.sentence()

    # A subset (band, wording): only its items are paired.
    a_rows, b_rows = items(a).assign(band="common", wording="canonical"), items(b).assign(band="common",
                                                                                          wording="canonical")
    a_rows.loc[:9, "band"] = b_rows.loc[:9, "band"] = "rare"  # the first 10: 6 only A, 4 only B
    common = paired_test(a_rows, b_rows, "test/common/letter_position_accuracy", "A", "B")
    assert (common.n, common.only_a, common.only_b) == (20, 0, 0)
    rare = paired_test(a_rows, b_rows, "test/rare/letter_position_accuracy", "A", "B")
    assert (rare.n, rare.only_a, rare.only_b) == (10, 6, 4)
    from spelltune.experiments.runs import CompareError

    with pytest.raises(CompareError, match="or one subset of them: test/"):
        paired_test(a_rows, b_rows, "test/frequent/letter_position_accuracy", "A", "B")

    # Two runs right and wrong on the same items: identical, not "noise".
    result = paired_test(items(b), items(b), "test/letter_position_accuracy", "A", "B")
    assert "identical on this metric" in result.sentence() and "noise" not in result.sentence()


def test_paired_test_pairs_items_not_positions():
    from spelltune.experiments.significance import paired_test

    a = items([True, False, True, True])
    b = items([True, False, True, True]).iloc[::-1]  # same answers, another order, plus another split
    b = pd.concat([b, items([False] * 4, split="validation")])
    result = paired_test(a, b, "test/letter_position_accuracy")
    assert (result.n, result.only_a, result.only_b, result.p_value) == (4, 0, 0, 1.0)


def test_importance_finds_the_param_that_matters():
    from spelltune.experiments.runs import Runs
    from spelltune.experiments.significance import importance

    # 12 synthetic experiments: accuracy rises with log(lr); lora.r does nothing.
    lrs = [1e-4, 3e-4, 1e-3, 3e-3] * 3
    ranks = [4] * 4 + [8] * 4 + [16] * 4
    metric = "metrics/eval.json:test/letter_position_accuracy"
    table = pd.DataFrame({"rev": [f"{i:07x}" for i in range(12)], "kind": "experiment", "created": None,
                          "train.lr": lrs, "lora.r": ranks,
                          metric: [0.2 + 0.1 * i + 0.01 * (j % 2) for j, i in enumerate([0, 1, 2, 3] * 3)]},
                         index=[f"exp{i}" for i in range(12)])
    result = importance(Runs(Path("."), table, ["train.lr", "lora.r"], [metric]), metric)
    assert list(result.index) == ["train.lr", "lora.r"]
    assert result.loc["train.lr", "variance explained"] > 0.9
    assert result.loc["lora.r", "variance explained"] < 0.1
    assert result["PED-ANOVA"].between(0, 1).all()  # Optuna's second opinion from 10 experiments on
    assert result.loc["train.lr", "PED-ANOVA"] > result.loc["lora.r", "PED-ANOVA"]


def test_params_missing_in_older_experiments_do_not_break_the_analysis():
    """A param added to the schema later is NaN for older experiments (seen on a real grid)."""
    from spelltune.experiments.runs import Runs
    from spelltune.experiments.significance import importance, seed_groups

    metric = "metrics/eval.json:test/letter_position_accuracy"
    n = 12
    table = pd.DataFrame({"rev": [f"{i:07x}" for i in range(n)], "kind": "experiment", "created": None,
                          "train.lr": [1e-4, 3e-4, 1e-3, 3e-3] * 3, "train.seed": [0] * 4 + [1] * 4 + [2] * 4,
                          "train.grad_norm_limit": [float("nan")] * 6 + [1000.0] * 6,
                          metric: [0.2 + 0.05 * i for i in range(n)]},
                         index=[f"exp{i}" for i in range(n)])
    runs = Runs(Path("."), table, ["train.lr", "train.seed", "train.grad_norm_limit"], [metric])
    assert seed_groups(runs, metric) is not None
    result = importance(runs, metric)
    assert "PED-ANOVA" in result and result["PED-ANOVA"].between(0, 1).all()
