"""The configurations a sweep runs (sweeps/space.py): checked against the params schema and the
constraints, grid and random draws, run_cap, and early termination's needs."""

from __future__ import annotations

import pytest

from conftest import BASE, cli, write
from spelltune.sweeps.schema import parse_sweep
from spelltune.sweeps.space import Space


def test_search_space_outside_the_params_schema_fails_before_anything_runs(tmp_path):
    path = write(tmp_path, {"method": "random", "run_cap": 3,
                            "parameters": {"lora.r": {"min": 0, "max": 8}, "train.lr": {"values": [0.1, 2.0]}}})
    proc = cli("sweep", "run", path)
    assert proc.returncode == 2
    assert (
        "parameters.lora.r: value 0 is not allowed by the params schema: Input should be greater than 0" in proc.stderr
    )
    assert (
        "parameters.train.lr: value 2.0 is not allowed by the params schema: Input should be less than 1" in proc.stderr
    )


def test_grid_honours_constraints_schema_and_run_cap(tmp_path):
    sweep = {
        "method": "grid",
        "parameters": {
            "lora.r": {"values": [4, 8, 16, 32]},
            "lora.alpha": {"values": [8, 16]},
            "train.warmup_steps": {"values": [10, 500]},  # 500 > train.max_steps: the schema says no
        },
        "constraints": ["lora.alpha >= lora.r"],
    }
    proc = cli("sweep", "plan", write(tmp_path, sweep))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    configs = [line.split()[1:] for line in lines if line.startswith("  s-")]
    assert configs == [
        ["lora.r=4", "lora.alpha=8", "train.warmup_steps=10"],
        ["lora.r=4", "lora.alpha=16", "train.warmup_steps=10"],
        ["lora.r=8", "lora.alpha=8", "train.warmup_steps=10"],
        ["lora.r=8", "lora.alpha=16", "train.warmup_steps=10"],
        ["lora.r=16", "lora.alpha=16", "train.warmup_steps=10"],
    ]
    assert lines[-1] == "trials: 5"
    assert any("violates constraint lora.alpha >= lora.r" in line for line in lines)
    assert any("train.warmup_steps = 500: must be <= train.max_steps" in line for line in lines)

    capped = cli("sweep", "plan", write(tmp_path, {**sweep, "run_cap": 2})).stdout.splitlines()
    assert capped[-1] == "trials: 2"


def test_distributions_grid_and_random_draws():
    sweep = parse_sweep({
        "method": "random", "run_cap": 40, "seed": 3,
        "parameters": {
            "train.lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2},
            "lora.dropout": {"distribution": "q_uniform", "min": 0.0, "max": 0.2, "q": 0.05},
            "train.warmup_steps": {"min": 0, "max": 5},  # int_uniform, inferred
            "train.weight_decay": {"min": 0.0, "max": 0.1},  # uniform, inferred
            "lora.target_modules": {"values": [["q_proj", "v_proj"], ["q_proj"]], "probabilities": [0.9, 0.1]},
            "train.seed": {"value": 1},
        },
    })
    space = Space(sweep, BASE)
    assert sweep.parameters["lora.dropout"].grid() == [0.0, 0.05, 0.1, 0.15, 0.2]
    assert sweep.parameters["train.warmup_steps"].grid() == [0, 1, 2, 3, 4, 5]
    configs, rejected = space.random()
    assert len(configs) == 40 and rejected == 0
    assert configs == Space(sweep, BASE).random()[0]  # seeded: the same draws every time
    for c in configs:
        assert 1e-4 <= c["train.lr"] <= 1e-2 and c["lora.dropout"] in (0.0, 0.05, 0.1, 0.15, 0.2)
        assert isinstance(c["train.warmup_steps"], int) and 0 <= c["train.weight_decay"] <= 0.1
        assert c["train.seed"] == 1
    lrs = sorted(c["train.lr"] for c in configs)
    assert lrs[len(lrs) // 2] < 3e-3  # log-uniform: the median is near the geometric mean (1e-3)
    assert sum(c["lora.target_modules"] == ["q_proj"] for c in configs) < 15


def test_random_finite_space_smaller_than_run_cap(tmp_path):
    proc = cli("sweep", "plan", write(tmp_path, {"method": "random", "run_cap": 10,
                                                  "parameters": {"lora.r": {"values": [4, 8]}}}))
    assert proc.stdout.splitlines()[-1] == "trials: 2"
    assert "only 2 distinct configurations" in proc.stdout


def test_a_constraint_may_name_a_key_the_sweep_does_not_set():
    sweep = parse_sweep({"method": "grid", "parameters": {"train.warmup_steps": {"values": [5, 200, 300]}},
                         "constraints": ["train.warmup_steps * 2 <= train.max_steps"]})
    configs, dropped = Space(sweep, BASE).grid()
    assert [c["train.warmup_steps"] for c in configs] == [5]  # params.yaml: max_steps 250
    assert len(dropped) == 2


@pytest.mark.parametrize("early_terminate, metric, fixed, message", [
    ({"type": "hyperband", "min_iter": 50, "eta": 2}, "val/letter_position_accuracy", [],
     "early_terminate.min_iter = 50: counts validation evaluations (as W&B counts the metric's logs); a run has "
     f"{BASE['train']['max_steps'] // BASE['train']['eval_every']} "),
    ({"type": "hyperband", "min_iter": 1, "eta": 2}, "val/char_error_rate", [],
     "early_terminate needs a metric the train stage logs at each evaluation"),
    ({"type": "hyperband", "min_iter": 1, "eta": 2}, "val/spelling_exact_match", ["-S", "train.val_generate_items=0"],
     "logged during training only when train.val_generate_items > 0"),
])
def test_early_terminate_counts_evaluations_and_needs_a_training_metric(
    tmp_path, early_terminate, metric, fixed, message
):
    path = write(tmp_path, {"method": "bayes", "run_cap": 4, "metric": {"name": metric, "goal": "maximize"},
                            "parameters": {"train.lr": {"min": 1e-4, "max": 1e-3}}, "early_terminate": early_terminate})
    proc = cli("sweep", "plan", path, *fixed)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


@pytest.mark.parametrize("method", ["random", "bayes"])
def test_a_q_uniform_too_fine_to_list_is_refused_at_plan_in_one_line(tmp_path, method):
    """Issue 41: q = 1e-10 over [1e-4, 3e-3] is 29 million points; `sweep plan` used to list
    them all (past 30 s and 1.1 GB) for its bounds check and each random draw."""
    import subprocess
    import sys

    sweep = {"method": method, "run_cap": 3, "metric": {"name": "val/loss", "goal": "minimize"},
             "parameters": {"train.lr": {"distribution": "q_uniform", "min": 1e-4, "max": 3e-3, "q": 1e-10}}}
    proc = subprocess.run([sys.executable, "-m", "spelltune.cli", "sweep", "plan", write(tmp_path, sweep)],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]  # one line
    assert ("parameters.train.lr: q_uniform(0.0001, 0.003, q=1e-10) has 29,000,001 values; at most 10,000: "
            "a larger q, or distribution uniform") in proc.stderr
