"""Tracking: every run lands in DVCLive and in W&B (offline here) under one metric
contract, no secret reaches a file the run writes, and a broken W&B never stops a run."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from conftest import TINY_OVERRIDES, run, set_args
from spelltune.experiments.wandb_runs import read_wandb_run
from spelltune.task.questions import ITEMS_PER_HELD_OUT_WORD
from spelltune.training.devices import original_repo_root
from spelltune.training.wandb_run import WandbRun, scrub, wandb_group, wandb_mode

SECRETS = {
    "WANDB_API_KEY": "wandbkey-0123456789abcdef0123456789abcdef",
    "HF_TOKEN": "hf_tokenvalue_0123456789",
    "MY_SERVICE_SECRET": "servicesecret-987654321",
    "PAYMENTS_KEY": "paymentskey-13579",
}
CURVES = "metrics/train/plots/metrics"


def tsv_rows(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines()]


def test_queued_style_run_tracked_in_dvclive_and_wandb_without_secrets(repo, tiny_model, tmp_path):
    """A `--temp` experiment runs in a copy under .dvc/tmp/exps that DVC deletes; its W&B
    offline run must land in the original repository."""
    overrides = {"model.source": str(tiny_model), **TINY_OVERRIDES}
    env = {**SECRETS, "WANDB_MODE": "offline", "WANDB_RUN_GROUP": "grid-lr"}
    run(["dvc", "exp", "run", "--temp", "--name", "tracked", *set_args(overrides)], repo, env=env, timeout=900)
    assert not list((repo / ".dvc/tmp/exps").glob("tmp*")), "the temporary copy is expected to be gone"

    # W&B: one offline run named after the experiment, in the original repo's wandb/; the
    # evaluate stage resumed it (a second offline directory of the same run id) for the scores.
    runs = [read_wandb_run(d) for d in (repo / "wandb").glob("offline-run-*")]
    assert len(runs) == 2 and len({d.name.rsplit("-", 1)[1] for d in (repo / "wandb").glob("offline-run-*")}) == 1
    (wb,) = [r for r in runs if r["history"]]
    (scores,) = [r["summary"] for r in runs if not r["history"]]
    assert wb["name"] == "tracked" and wb["group"] == "grid-lr"
    fingerprint = wb["config"]["params_fingerprint"]
    assert set(wb["tags"]) == {tiny_model.name, "spelling", "hf-cpu", f"params-{fingerprint}"}
    assert len(fingerprint) == 16
    assert wb["config"]["train"]["max_steps"] == TINY_OVERRIDES["train.max_steps"]

    # The same metrics at the same steps in both trackers.
    run(["dvc", "exp", "apply", "tracked"], repo)
    curves = repo / CURVES
    for name in ("train/loss", "train/grad_norm", "time/wallclock_hours", "throughput/tokens_per_second",
                 "memory/rss_mb", "val/loss", "val/letter_position_accuracy", "val/wallclock_hours"):
        rows = tsv_rows(curves / f"{name}.tsv")
        assert rows[0][:2] == ["timestamp", "step"], name  # the wall-clock column
        dvclive = {int(r[1]): float(r[2]) for r in rows[1:]}
        in_wandb = {row["_step"]: row[name] for row in wb["history"] if name in row}
        assert in_wandb == pytest.approx(dvclive), name

    summary = json.loads((repo / "metrics/summary.json").read_text())
    run_id = next((repo / "wandb").glob("offline-run-*")).name.rsplit("-", 1)[1]
    assert (repo / ".spelltune/wandb-runs" / summary["params_fingerprint"]).read_text().strip() == run_id
    assert "wandb_run_id" not in summary  # not in DVC's outputs: a rerun stays bit-identical
    evaluated = json.loads((repo / "metrics/eval.json").read_text())
    assert evaluated and {k: scores[k] for k in evaluated} == pytest.approx(evaluated)  # every final score
    assert wb["summary"]["best_step"] == summary["best_step"]
    assert wb["summary"]["best/val/loss"] == pytest.approx(summary["best"]["val/loss"])
    assert wb["summary"]["early_stop_reason"] == summary["early_stop_reason"]

    # `dvc plots diff` has loss and accuracy against steps and against wall-clock hours.
    plots = json.loads(run(["dvc", "plots", "show", "--json"], repo).stdout)
    assert not plots.get("errors"), plots.get("errors")
    for plot_id in ("loss_by_step", "loss_by_hours", "val_loss_by_hours", "accuracy_by_step", "accuracy_by_hours"):
        assert plots["data"][plot_id], plot_id
    assert all("wallclock_hours" in row for row in plots["data"]["accuracy_by_hours"][0]["content"]["data"]["values"])

    # No secret's value in any file the run wrote (W&B's own files and config included).
    leaks = [
        str(path.relative_to(repo))
        for path in repo.rglob("*")
        if path.is_file() and ".git" not in path.parts
        for secret in SECRETS.values()
        if secret.encode() in path.read_bytes()
    ]
    assert not leaks


def test_broken_wandb_package_run_completes(repo, tiny_model, tmp_path):
    """A W&B that fails to import costs one warning; DVCLive output stays complete."""
    broken = tmp_path / "broken"
    (broken / "wandb").mkdir(parents=True)
    (broken / "wandb" / "__init__.py").write_text("raise ImportError('this wandb is broken')\n")
    overrides = {"model.source": str(tiny_model), **TINY_OVERRIDES}
    env = {"PYTHONPATH": f"{broken}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = run(["dvc", "exp", "run", *set_args(overrides)], repo, env=env, timeout=900)
    warnings = [line for line in (proc.stdout + proc.stderr).splitlines() if "W&B start failed" in line]
    assert len(warnings) == 1 and "this wandb is broken" in warnings[0]
    steps = [int(r[1]) for r in tsv_rows(repo / CURVES / "train/loss.tsv")[1:]]
    assert steps == [2, 4, 6]
    assert (
        json.loads((repo / "metrics/eval_details.json").read_text())["test"]["n_items"]
        == ITEMS_PER_HELD_OUT_WORD * TINY_OVERRIDES["data.test_words"]
    )
    assert not (repo / "wandb").exists()


# (W&B online without a reachable server logs offline instead: tests/test_faults.py.)
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


def test_process_age_is_not_ahead_of_the_clock():
    """seconds_since_process_start of a fresh process is within the time its parent saw it
    run (psutil's create_time, rounded by the boot time, could be up to 1 s ahead)."""
    import subprocess
    import sys
    import time

    started = time.monotonic()
    printed = subprocess.run(
        [sys.executable, "-c", "from spelltune.training.tracking import seconds_since_process_start as a; print(a())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    wall = time.monotonic() - started
    assert 0 <= float(printed) <= wall
