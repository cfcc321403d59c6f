"""`python -m spelltune.bench.gpu` without a GPU says so in one line and measures nothing."""

from __future__ import annotations

import subprocess
import sys

from conftest import cpu_env


def test_gpu_benchmark_without_a_gpu_says_so_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "spelltune.bench.gpu", "--out", str(tmp_path / "gpu.json")],
                          cwd=tmp_path, env=cpu_env(), capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert done.stderr.strip() == "error: spelltune.bench.gpu needs a CUDA GPU (none found); nothing was measured"
    assert not (tmp_path / "gpu.json").exists()
