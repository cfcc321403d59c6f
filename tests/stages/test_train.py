"""The train stage exits on bad params in one line before it loads anything heavy."""

from __future__ import annotations

import subprocess
import sys

import yaml

from conftest import with_value


def test_stage_exits_non_zero_with_one_line_before_loading_anything(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(with_value("lora.r", 0)))
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "keep.txt").write_text("previous run")
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "spelltune.stages.train"],
        cwd=tmp_path, capture_output=True, text=True,
    )
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if not ln.startswith("import time:")]
    assert lines == ["error: params.yaml: lora.r = 0: Input should be greater than 0"]
    # Nothing heavy was imported and nothing was touched.
    imported = {ln.split("|")[-1].strip() for ln in proc.stderr.splitlines() if ln.startswith("import time:")}
    assert "torch" not in imported and "transformers" not in imported
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints", "params.yaml"]
    assert (tmp_path / "checkpoints" / "keep.txt").read_text() == "previous run"
