"""sweep.yaml's schema (sweeps/schema.py): bad files get one line per error and exit 2, a grid
too large is refused at once, and our extensions live beside the W&B file."""

from __future__ import annotations

import pytest
import yaml

from conftest import cli, write
from spelltune.sweeps.overrides import SweepError
from spelltune.sweeps.schema import load_sweep, parse_sweep


def test_a_sweep_can_choose_on_a_subset_of_validation_such_as_common_words(tmp_path):
    base = {"method": "grid", "parameters": {"train.lr": {"values": [1e-3]}}}
    ok = write(tmp_path, {**base, "metric": {"name": "val/common/spelling_exact_match", "goal": "maximize"}})
    assert load_sweep(ok).metric.name == "val/common/spelling_exact_match"
    bad = write(tmp_path, {**base, "metric": {"name": "val/commonn/spelling_exact_match", "goal": "maximize"}})
    proc = cli("sweep", "plan", bad)
    assert proc.returncode == 2
    assert "metric.name = 'val/commonn/spelling_exact_match': unknown metric;" in proc.stderr
    assert "GROUP one of common, mid, rare, canonical, held_out" in proc.stderr


def test_bad_sweep_file_one_line_per_error_and_exit_2(tmp_path):
    path = write(tmp_path, {
        "method": "grud",
        "metric": {"name": "val/loss", "goal": "up"},
        "parameters": {
            "train.lrr": {"values": [1]},
            "train.lr": {"distribution": "log_uniform", "min": -4, "max": -2},
            "lora.dropout": {"distribution": "uniform", "min": 0.5},
        },
        "constraints": ["lora.alpha >= lora.rr", "__import__('os')"],
        "extra": 1,
    })
    proc = cli("sweep", "plan", path)
    assert proc.returncode == 2 and proc.stdout == ""
    err = proc.stderr
    assert "method = 'grud': allowed: 'grid', 'random' or 'bayes'" in err
    assert "metric.goal = 'up': allowed: 'minimize' or 'maximize'" in err
    assert "parameters.train.lrr = 'train.lrr': unknown params key; allowed in train: train.lr," in err
    assert (
        "parameters.train.lr.distribution = 'log_uniform': unsupported distribution" in err
        and "log_uniform_values" in err
    )
    assert "parameters.lora.dropout" in err and "uniform needs min and max" in err
    assert "constraints.0 = 'lora.alpha >= lora.rr'" in err and "lora.rr: unknown params key" in err
    assert "constraints.1" in err and "is not allowed" in err
    assert "extra = 1: unknown key; allowed: method, metric, parameters" in err
    assert len(err.strip().splitlines()) == 8


@pytest.mark.parametrize(
    "sweep, message",
    [
        ({"method": "random", "parameters": {"lora.r": {"values": [4]}}}, "method random needs run_cap"),
        ({"method": "bayes", "run_cap": 2, "parameters": {"lora.r": {"values": [4]}}}, "method bayes needs metric"),
        ({"method": "grid", "parameters": {"train.lr": {"min": 0.001, "max": 0.01}}}, "train.lr is continuous"),
        (
            {"method": "grid", "parameters": {"lora.r": {"distribution": "int_uniform", "min": 1.5, "max": 4}}},
            "int_uniform needs integer",
        ),
        (
            {
                "method": "grid",
                "parameters": {"lora.r": {"values": [4]}},
                "early_terminate": {"type": "hyperband", "eta": 3},
            },
            "hyperband needs min_iter",
        ),
        (
            {"method": "grid", "parameters": {"lora.r": {"values": [4, 8], "probabilities": [0.5]}}},
            "probabilities has 1 entries, values 2",
        ),
    ],
)
def test_sweep_schema_rejects(sweep, message):
    with pytest.raises(SweepError, match=message):
        parse_sweep(sweep)


@pytest.mark.parametrize("parameters", [
    {"train.max_steps": {"distribution": "int_uniform", "min": 1, "max": 10**10}},
    {"lora.dropout": {"distribution": "q_uniform", "min": 0.0, "max": 0.5, "q": 1e-10}},
    {f"train.{k}": {"values": list(range(1, 11))} for k in ("max_steps", "warmup_steps", "seed", "log_every",
                                                           "save_every", "eval_every")},  # 10**6 points
])
def test_a_grid_too_large_to_run_is_one_line_at_once(tmp_path, parameters):
    proc = cli("sweep", "plan", write(tmp_path, {"method": "grid", "run_cap": 5, "parameters": parameters}))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "points (" in proc.stderr and "at most 10,000: narrow the ranges" in proc.stderr


def test_our_extensions_live_beside_the_wandb_file(tmp_path):
    base = {"name": "x", "method": "random", "run_cap": 2, "metric": {"name": "val/loss"},
            "parameters": {"lora.r": {"values": [4, 8]}, "lora.alpha": {"values": [4, 16]}}}
    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump({**base, "constraints": ["lora.alpha >= lora.r"], "seed": 3}))
    plan = cli("sweep", "plan", str(path))  # inline still works for us, with a note for W&B
    assert plan.returncode == 0
    assert "constraints: W&B rejects this top-level key" in plan.stderr and "move it to x.spelltune.yaml" in plan.stderr
    assert "seed: W&B rejects" in plan.stderr and "project: not set" in plan.stderr

    path.write_text(yaml.safe_dump({**base, "project": "p"}))
    (tmp_path / "x.spelltune.yaml").write_text(yaml.safe_dump(
        {"constraints": ["lora.alpha >= lora.r"], "seed": 3, "early_terminate": {"type": "median", "min_iter": 1}}))
    plan = cli("sweep", "plan", str(path))
    assert plan.returncode == 0 and "note:" not in plan.stderr, plan.stderr
    assert "constraint: lora.alpha >= lora.r" in plan.stdout and "trials: 2" in plan.stdout

    (tmp_path / "x.spelltune.yaml").write_text(yaml.safe_dump({"seed": 1, "parameters": {}}))
    path.write_text(yaml.safe_dump({**base, "project": "p", "seed": 2}))
    bad = cli("sweep", "plan", str(path))
    assert bad.returncode == 2
    assert "x.spelltune.yaml: parameters: unknown key; allowed: constraints, seed, early_terminate" in bad.stderr
    assert "x.spelltune.yaml: seed: also set in" in bad.stderr
