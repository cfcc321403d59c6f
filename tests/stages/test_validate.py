"""The validate stage stops, in one line, what this machine cannot run."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from conftest import ROOT, cpu_env


@pytest.mark.parametrize(
    ("model", "line"),
    [
        (
            {"load_in_4bit": True},
            "error: params.yaml: model.load_in_4bit = True: needs a CUDA GPU (none found); use false on CPU",
        ),
        (
            {"backend": "unsloth"},
            "error: params.yaml: model.backend = 'unsloth': needs a CUDA GPU (none found) and the unsloth package",
        ),
        (
            {"dtype": "bfloat16"},
            "error: params.yaml: model.dtype = 'bfloat16': needs a CUDA GPU (none found); use auto or float32 on CPU",
        ),
    ],
)
def test_validate_stage_stops_what_this_machine_cannot_run(tmp_path, model, line):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["model"].update(model)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    done = subprocess.run([sys.executable, "-m", "spelltune.stages.validate"], cwd=tmp_path, env=cpu_env(),
                          capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]  # one line
    assert done.stderr.startswith(line)
    assert not (tmp_path / ".spelltune/params.ok").exists()
