"""A Bayesian sweep's failed trials, with real DVC and a stand-in one-stage pipeline: retried
once, never stopping the others."""

from __future__ import annotations

import sys

import pytest
import yaml

from conftest import ROOT, write

pytestmark = pytest.mark.e2e


FAKE_STAGE = '''
import json, os, pathlib, sys, yaml
p = yaml.safe_load(open("params.yaml"))
r, lr = p["lora"]["r"], p["train"]["lr"]
marker = pathlib.Path(os.environ["FAKE_MARKERS"]) / f"{lr!r}"
if r == 8 or not marker.exists():  # r = 8 always fails; anything else fails its first attempt
    marker.touch()
    sys.exit(3)
pathlib.Path("metrics").mkdir(exist_ok=True)
json.dump({"val/loss": lr}, open("metrics/eval.json", "w"))
'''


def test_bayes_failed_trial_is_retried_once_and_never_stops_the_others(tmp_path):
    """A stand-in one-stage pipeline (so this runs in seconds): each config fails at its
    first attempt and passes at its retry; with lora.r=8 every attempt fails."""
    import optuna
    from optuna.trial import TrialState as TS

    from conftest import run
    from spelltune.training.pruning import open_storage

    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    (repo / "fake.py").write_text(FAKE_STAGE)
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"fake": {
        "cmd": "python fake.py", "deps": ["fake.py"], "params": ["lora.r", "train.lr"],
        "metrics": [{"metrics/eval.json": {"cache": False}}]}}}))
    write(repo, {"name": "f", "method": "bayes", "metric": {"name": "val/loss", "goal": "minimize"},
                 "parameters": {"train.lr": {"min": 0.1, "max": 0.2}}, "run_cap": 2})
    for cmd in (["git", "init", "-q", "-b", "main"], ["git", "config", "user.name", "t"],
                ["git", "config", "user.email", "t@t.invalid"], ["dvc", "init", "-q"], ["git", "add", "-A"],
                ["git", "commit", "-qm", "init"]):
        run(cmd, repo)
    markers = tmp_path / "markers"
    markers.mkdir()
    sweep = [sys.executable, "-m", "spelltune.cli", "sweep", "run", "s.yaml"]

    ok = run(sweep, repo, env={"FAKE_MARKERS": str(markers)}, timeout=300)
    trials = optuna.load_study(study_name="f", storage=open_storage(str(repo / ".spelltune/sweeps/f.journal"))).trials
    # Retried through Optuna's RetryHeartbeatStaleTrialCallback: it marks the copy's system attrs.
    first = [t for t in trials if "failed_trial" not in t.system_attrs]
    retries = [t for t in trials if "failed_trial" in t.system_attrs]
    assert [t.state for t in first] == [TS.FAIL, TS.FAIL] and len(retries) == 2
    assert all(t.state == TS.COMPLETE for t in retries)
    for t in retries:
        assert t.params == trials[t.system_attrs["failed_trial"]].params
        assert t.value == pytest.approx(t.params["train.lr"], rel=1e-5)
    assert ok.stdout.strip().splitlines()[-1] == "trials: 2  complete: 2  pruned: 0  failed: 2"

    bad = run([*sweep, "-S", "lora.r=8", "--storage", str(tmp_path / "bad.journal")], repo, check=False,
              env={"FAKE_MARKERS": str(markers)}, timeout=300)
    assert bad.returncode == 1
    assert bad.stdout.strip().splitlines()[-1] == "trials: 2  complete: 0  pruned: 0  failed: 4"
    assert bad.stderr.count("will be retried once") == 2
    assert "see .spelltune/sweeps/f/f-t000.log" in bad.stderr
    assert "(f-t001-2)" in bad.stderr  # a name the first study's experiment holds is not reused
