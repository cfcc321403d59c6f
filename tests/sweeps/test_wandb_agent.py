"""The program `wandb agent` runs (sweeps/wandb_agent.py): its arguments become DVC overrides."""

from __future__ import annotations

import pytest
import yaml

from conftest import ROOT, cli
from spelltune.sweeps.overrides import SweepError
from spelltune.sweeps.wandb_agent import wandb_overrides


def test_wandb_agent_arguments_become_dvc_overrides(tmp_path):
    assert wandb_overrides(["--train.lr=0.0003", "--lora.r", "8", "--lora.target_modules=['q_proj', 'v_proj']"]) == {
        "train.lr": 0.0003, "lora.r": 8, "lora.target_modules": ["q_proj", "v_proj"]}
    with pytest.raises(SweepError):
        wandb_overrides(["--train.nope=1"])
    proc = cli("sweep", "wandb-agent", "sweep.yaml", "--dry-run", "--threads", "1",
               "--train.lr=0.0003", "--lora.r=8", "--lora.alpha=16", "--train.warmup_steps=5", "--lora.dropout=0.05")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == (
        "dvc exp run --temp -n spell-wandb-"
        + proc.stdout.split("spell-wandb-")[1].split()[0]
        # a W&B trial is a sweep trial too: test is left for `spelltune sweep finalize`
        + " -S eval.test=false -S train.threads=1 -S train.lr=0.0003 -S lora.r=8 -S lora.alpha=16"
        + " -S train.warmup_steps=5"
        + " -S lora.dropout=0.05"
    )
    # W&B knows nothing of our constraints: such a run is skipped, not run.
    skipped = cli("sweep", "wandb-agent", "sweep.yaml", "--dry-run", "--lora.r=32", "--lora.alpha=8")
    assert skipped.returncode == 0 and skipped.stdout == ""
    assert "violates constraint lora.alpha >= lora.r" in skipped.stderr


def test_sweep_yaml_command_runs_the_agent_entry_point():
    sweep = yaml.safe_load((ROOT / "sweep.yaml").read_text())
    assert sweep["command"][2:6] == ["-m", "spelltune.cli", "sweep", "wandb-agent"]
    assert sweep["command"][-1] == "${args}"
