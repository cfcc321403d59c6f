"""`spelltune sweep plan` (sweeps/commands.py) on the repository's own sweep.yaml."""

from __future__ import annotations

import yaml

from conftest import ROOT, cli


def test_the_repository_sweep_yaml_plans():
    proc = cli("sweep", "plan", "sweep.yaml")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    sweep = yaml.safe_load((ROOT / "sweep.yaml").read_text())
    assert lines[-1] == f"trials: {sweep['run_cap']}"
    assert "adaptively" in proc.stdout and "hyperband" in proc.stdout
