"""The experiment's W&B run (training/wandb_run.py): offline without a login, one warning when it
fails, secrets scrubbed, its group. (A run tracked end to end: e2e/test_tracking.py.)"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from spelltune.training.devices import original_repo_root
from spelltune.training.wandb_run import WandbRun, choose_run_id, scrub, wandb_group, wandb_mode


# (W&B online without a reachable server logs offline instead: tests/e2e/test_faults.py.)
@pytest.mark.parametrize(
    "env",
    [{"WANDB_DIR": "not-a-directory"}],  # unwritable: a file where the directory should be
    ids=["unwritable-dir"],
)
def test_wandb_failure_is_one_warning(env, tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "not-a-directory").write_text("a file\n")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with caplog.at_level(logging.WARNING, logger="spelltune.training.wandb_run"):
        tracker = WandbRun(name="broken", config={"a": 1}, tags=[], group=None)
        tracker.log({"train/loss": 1.0}, step=1)
        tracker.finish({"best_step": 1})
    assert tracker.id is None
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("spelltune")]
    assert len(warnings) == 1 and "W&B start failed" in warnings[0].getMessage()
    assert env.get("WANDB_API_KEY", "@@") not in caplog.text


def test_wandb_mode_offline_unless_logged_in(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.delenv("NETRC", raising=False)
    for key in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    assert wandb_mode() == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_mode() == "online"
    (tmp_path / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password " + "y" * 40 + "\n")
    (tmp_path / ".netrc").chmod(0o600)
    monkeypatch.delenv("WANDB_API_KEY")
    assert wandb_mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_mode() == "offline"


def test_scrub_and_original_root(monkeypatch):
    monkeypatch.setenv("SOME_TOKEN", "tok-123456")
    assert scrub({"a": ["x tok-123456 y"], "b": 3}) == {"a": ["x *** y"], "b": 3}
    assert original_repo_root(Path("/work/proj/.dvc/tmp/exps/tmpab12cd")) == Path("/work/proj")
    assert original_repo_root(Path("/work/proj")) == Path("/work/proj")


def test_wandb_group_is_the_sweep_or_the_baseline_commit(monkeypatch):
    monkeypatch.delenv("WANDB_RUN_GROUP", raising=False)
    monkeypatch.delenv("DVC_EXP_BASELINE_REV", raising=False)
    assert wandb_group() is None  # a plain `python -m spelltune.stages.train`
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", "0123456789abcdef0123456789abcdef01234567")
    assert wandb_group() == "baseline-0123456"  # every experiment of a `dvc exp run --queue` grid
    monkeypatch.setenv("WANDB_RUN_GROUP", "sweep-lr")
    assert wandb_group() == "sweep-lr"


def test_wandb_start_skips_launch_inputs_nothing_staged(tmp_path):
    """W&B's init imports its Launch package only to apply staged job inputs; with none
    staged (the package not imported) spelltune skips it, and the offline run is complete."""
    import subprocess
    import sys

    code = (
        "import sys; from spelltune.training.wandb_run import WandbRun\n"
        "run = WandbRun(name='t', config={'a': 1}, tags=[], group=None)\n"
        "run.log({'train/loss': 1.0}, step=1); run.finish({'best_step': 1})\n"
        "print(run.id, 'wandb.sdk.launch' in sys.modules)\n"
    )
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    run_id, launch_imported = out[-2], out[-1]
    assert launch_imported == "False"
    assert len(list(tmp_path.glob(f"wandb/offline-run-*-{run_id}/run-{run_id}.wandb"))) == 1


def test_run_id_is_wandb_run_id_then_the_checkpoints_then_new(monkeypatch, caplog):
    """WANDB_RUN_ID names the train stage's run (evaluate adds its scores to that id), also
    over a resumed checkpoint's other id, with one warning naming where the earlier curves are."""
    monkeypatch.delenv("WANDB_RUN_ID", raising=False)
    assert choose_run_id("ckpt0001") == "ckpt0001"
    fresh = choose_run_id(None)
    assert len(fresh) == 8 and fresh != choose_run_id(None)
    monkeypatch.setenv("WANDB_RUN_ID", "rid1")
    with caplog.at_level(logging.WARNING, logger="spelltune.training.wandb_run"):
        assert choose_run_id(None) == "rid1"
        assert choose_run_id("rid1") == "rid1"
        assert not caplog.records
        assert choose_run_id("ckpt0001") == "rid1"
    (warning,) = caplog.records
    assert "ckpt0001" in warning.getMessage() and "WANDB_RUN_ID=rid1" in warning.getMessage()
