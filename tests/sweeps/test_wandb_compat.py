"""sweep.yaml is a valid W&B sweep config (sweeps/wandb_compat.py): the same file, the same meaning."""

from __future__ import annotations

import yaml

from conftest import ROOT, cli
from spelltune.sweeps.schema import parse_sweep

# W&B's sweep config schema (wandb/sweeps, config/schema.json), recorded: the top level and
# early_terminate allow only these keys ("additionalProperties": false), and each parameter
# one of these shapes. `wandb sweep` sends the file to W&B's server, which checks it there.
WANDB_TOP = {"apiVersion", "kind", "controller", "description", "program", "job", "image_uri", "entity", "project",
             "method", "command", "name", "run_cap", "metric", "metrics", "scheduler", "early_terminate", "parameters"}


WANDB_HYPERBAND = {"type", "max_iter", "min_iter", "s", "eta", "strict"}


WANDB_PARAM_SHAPES = {
    "constant": {"value", "distribution"}, "categorical": {"values", "distribution"},
    "int_uniform": {"min", "max", "distribution"}, "uniform": {"min", "max", "distribution"},
    "q_uniform": {"min", "max", "q", "distribution"}, "log_uniform_values": {"min", "max", "distribution"},
}


def test_sweep_yaml_is_a_valid_wandb_sweep_config():
    from spelltune.sweeps.wandb_compat import wandb_problems

    raw = yaml.safe_load((ROOT / "sweep.yaml").read_text())
    assert set(raw) <= WANDB_TOP, set(raw) - WANDB_TOP
    assert raw["project"] and raw["method"] in ("grid", "random", "bayes")
    assert raw["early_terminate"]["type"] == "hyperband" and set(raw["early_terminate"]) <= WANDB_HYPERBAND
    assert set(raw["metric"]) <= {"name", "goal", "target"} and ":" not in raw["metric"]["name"]
    assert raw["metric"]["name"].startswith("val/")  # chosen on validation, a key W&B's runs have
    sweep = parse_sweep(raw)
    for key, spec in raw["parameters"].items():
        assert set(spec) <= WANDB_PARAM_SHAPES[sweep.parameters[key].distribution], key
    assert wandb_problems(ROOT / "sweep.yaml") == []
    proc = cli("sweep", "plan", "sweep.yaml")
    assert "note:" not in proc.stderr and "warning" not in proc.stderr, proc.stderr
    assert "constraint: lora.alpha >= lora.r" in proc.stdout  # from sweep.spelltune.yaml, beside it
