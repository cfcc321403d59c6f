"""The Optuna study's parts (sweeps/study.py): early_terminate's min_iter as Optuna steps."""

from __future__ import annotations

from conftest import BASE
from spelltune.sweeps.schema import parse_sweep
from spelltune.sweeps.space import Space


def test_min_iter_in_evaluations_becomes_optuna_steps():
    from spelltune.sweeps.study import pruner_spec

    sweep = parse_sweep({"method": "bayes", "run_cap": 4, "metric": {"name": "val/loss"},
                         "parameters": {"train.lr": {"min": 1e-4, "max": 1e-3}},
                         "early_terminate": {"type": "hyperband", "min_iter": 1, "eta": 2}})
    spec = pruner_spec(sweep, Space(sweep, BASE, {"train.eval_every": 20, "train.max_steps": 130}))
    # W&B stops a run after its 1st logged evaluation; Optuna's rung is that evaluation's step.
    assert spec == {
        "type": "hyperband",
        "min_resource": 20,
        "max_resource": 120,
        "reduction_factor": 2,
        "eval_every": 20,
    }
