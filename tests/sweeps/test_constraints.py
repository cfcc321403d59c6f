"""The bounded constraint language (sweeps/constraints.py)."""

from __future__ import annotations

import pytest

from spelltune.sweeps.constraints import Constraint


def test_constraints_that_would_never_finish_simply_do_not_hold():
    from spelltune.sweeps.constraints import Constraint, safe_holds

    # Unbounded, the first two would run for hours or fill the memory.
    for expr in ("lora.r ** 10 ** 10 > 0", "'x' * 10 ** 12 == 'x'", "lora.r * 'x' != ''"):
        assert safe_holds(Constraint(expr), {"lora.r": 8}) is False
    assert safe_holds(Constraint("lora.r ** 2 >= 64"), {"lora.r": 8}) is True


def test_constraints():
    c = Constraint("lora.alpha >= 2 * lora.r and not train.lr > 0.01")
    assert c.keys == {"lora.alpha", "lora.r", "train.lr"}
    assert c.holds({"lora.alpha": 32, "lora.r": 16, "train.lr": 0.001})
    assert not c.holds({"lora.alpha": 16, "lora.r": 16, "train.lr": 0.001})
    assert not c.holds({"lora.alpha": 64, "lora.r": 16, "train.lr": 0.1})
    assert Constraint("0 < train.warmup_steps < train.max_steps").holds(
        {"train.warmup_steps": 5, "train.max_steps": 10}
    )
    for bad in ("lora.r", "open('x')", "lora.r >= [1]", "lora.r = 3"):
        with pytest.raises(ValueError):
            Constraint(bad)
