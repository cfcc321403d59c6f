"""`spelltune check` (cli/check.py): valid params pass without importing torch; a bad value is one line."""

from __future__ import annotations

import subprocess
import sys

import yaml

from conftest import ROOT, cpu_env, with_value


def test_check_command_passes_the_defaults_without_torch(tmp_path):
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    code = ("import sys; from spelltune.cli import main; rc = main(['check', 'params.yaml']); "
            "assert 'torch' not in sys.modules, 'the default params need no machine check'; sys.exit(rc)")
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=cpu_env(), capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "params.yaml: valid"


def test_cli_check(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text((ROOT / "params.yaml").read_text())
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(with_value("lora.alpha", "zero")))  # complete but for one value
    ok = subprocess.run([sys.executable, "-m", "spelltune.cli", "check", str(good)], capture_output=True, text=True)
    assert ok.returncode == 0 and "valid" in ok.stdout
    fail = subprocess.run([sys.executable, "-m", "spelltune.cli", "check", str(bad)], capture_output=True, text=True)
    assert fail.returncode == 2
    assert fail.stderr.strip() == (f"error: {bad}: lora.alpha = 'zero': "
                                   "Input should be a valid number, unable to parse string as a number")
