"""`spelltune dashboard`: optuna-dashboard over a mirror of the repository's Bayesian studies
and DVC experiments, refreshed while trials run; checked through its JSON API and in a real
headless Chromium that can reach nothing but the dashboard."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import copy_project, git_commit_all, run, set_args, user_env
from test_compare import fast_project
from test_plots_offline import CHROMIUM, OFFLINE, chromium

pytestmark = pytest.mark.e2e
METRIC = "val/letter_position_accuracy"  # the tiny model spells nothing: its spelling score is 0 throughout
# Offline but for the dashboard on the loopback address.
LOCALHOST = [f for f in OFFLINE if not f.startswith("--host-resolver-rules")] + [
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--proxy-bypass-list=127.0.0.1"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/{path}", timeout=10) as response:
        return json.loads(response.read())


def trials_by_name(port: int) -> dict[str, dict]:
    """Every trial the dashboard serves, by its study and number, or by its DVC experiment's name."""
    out = {}
    for study in api(port, "studies")["study_summaries"]:
        for t in api(port, f"studies/{study['study_id']}?after=0")["trials"]:
            attrs = {a["key"]: a["value"] for a in t.get("user_attrs", [])}
            out[attrs.get("dvc_exp") or f"{study['study_name']}#{t['number']}"] = {**t, "study": study}
    return out


def wait_for(port: int, condition, timeout: float = 600, every: float = 0.5):
    deadline = time.time() + timeout
    trials = {}
    while time.time() < deadline:
        try:
            trials = trials_by_name(port)
        except OSError:  # not serving yet
            time.sleep(0.5)
            continue
        if condition(trials):
            return trials
        time.sleep(every)
    raise AssertionError(f"dashboard never showed it; last: { {k: v['state'] for k, v in trials.items()} }")


def bayes_journal(path: Path) -> None:
    """A real Optuna study in a journal file, as `spelltune sweep run` (bayes) leaves one."""
    import optuna

    path.parent.mkdir(parents=True, exist_ok=True)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    study = optuna.create_study(study_name="bo", storage=storage, direction="maximize")
    for lr, values in ((0.001, [0.1, 0.3]), (0.01, [0.05])):
        trial = study.ask({"train.lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)})
        trial.set_user_attr("dvc_exp", f"bo-{lr}")
        for step, value in enumerate(values):
            trial.report(value, step * 10)
        if len(values) == 2:
            study.tell(trial, values[-1])
        else:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)


def test_dashboard_lists_trials_live_and_after(tmp_path, tiny_model):
    repo = tmp_path / "repo"
    fast_project(repo, tiny_model)
    git_commit_all(repo)
    bayes_journal(repo / ".spelltune" / "sweeps" / "bo.journal")
    env = {"WANDB_MODE": "disabled"}
    # Two trials of a grid sweep (spelltune.sweeps.queue's names); the second trains long enough
    # for ten validations.
    run(["dvc", "exp", "run", "--queue", "-n", "grid-000", *set_args({"train.lr": 0.002})], repo, env=env)
    run(["dvc", "exp", "run", "--queue", "-n", "grid-001",
         *set_args({"train.lr": 0.004, "train.max_steps": 200, "train.eval_every": 20})], repo, env=env)

    port = free_port()
    log = (tmp_path / "dashboard.log").open("w")
    dashboard = subprocess.Popen(
        [str(Path(sys.executable).parent / "spelltune"), "dashboard", "--port", str(port), "--every", "1",
         "--metric", METRIC], cwd=repo, env={**user_env(), **env}, stdout=log, stderr=subprocess.STDOUT)
    try:
        first = wait_for(port, lambda t: {"grid-000", "grid-001", "bo-0.001", "bo-0.01"} <= t.keys(), timeout=120)
        assert first["grid-000"]["state"] == first["grid-001"]["state"] == "Waiting"
        assert first["grid-000"]["study"]["study_name"] == "grid"
        assert first["bo-0.001"]["state"] == "Complete" and first["bo-0.001"]["values"] == [0.3]
        assert [v["value"] for v in first["bo-0.001"]["intermediate_values"]] == [0.1, 0.3]
        assert first["bo-0.01"]["state"] == "Pruned"

        run(["dvc", "queue", "start", "-j", "1"], repo, env=env)
        done = wait_for(port, lambda t: state(t, "grid-000") == state(t, "grid-001") == "Complete")
        value = done["grid-000"]["values"][0]
        assert len(done["grid-001"]["intermediate_values"]) == 10  # every 20 of 200 steps
        page = trial_pages(port, done["grid-001"]["study"]["study_id"], tmp_path / "done.png")
        assert f"Value {value:g}" in page[0] and "dvc_exp grid-000" in page[0] and "Complete" in page[0]
        assert f"Value {done['grid-001']['values'][0]:g}" in page[1] and "dvc_exp grid-001" in page[1]
        assert "Complete" in page[1] and "Intermediate Values" in page[1]
    finally:
        dashboard.terminate()
        dashboard.wait(timeout=30)
        log.close()
    # A refresh may fail once while DVC removes a finished run's temporary workspace; it is retried.
    assert "Traceback" not in (tmp_path / "dashboard.log").read_text()


def test_a_training_queued_run_is_running_with_its_curve_so_far(tmp_path):
    """A queued run's executor that is training: Running, with the steps its temporary
    workspace's curve has (a cut last line skipped). Seen live only when a refresh falls
    inside the run, so checked here on the function the refresh calls."""
    from spelltune.experiments.dashboard import _outcome
    from spelltune.experiments.runs import CURVES_DIR

    repo, root = tmp_path / "repo", tmp_path / "executor"
    copy_project(repo)
    git_commit_all(repo)
    curve = root / CURVES_DIR / f"{METRIC}.tsv"
    curve.parent.mkdir(parents=True)
    curve.write_text("step\tletter_position_accuracy\n60\t0.25\n120\t0.5\n18")
    state_name, value, points = _outcome(repo, {"rev": "0" * 40}, {"state": "running", "local": {"root": str(root)}},
                                         METRIC)
    assert (state_name, value) == ("RUNNING", None)
    assert dict(zip(points["step"], points["value"])) == {60: 0.25, 120: 0.5}
    queued = _outcome(repo, {"rev": "0" * 40}, {"state": "queued", "local": {"root": None}}, METRIC)
    assert queued == ("WAITING", None, None)


def state(trials: dict, name: str) -> str | None:
    return trials.get(name, {}).get("state")  # a study being rebuilt lists no trials for a moment


def trial_pages(port: int, study_id: int, screenshot: Path) -> list[str]:
    """The trials page with both trials selected, as Chromium renders it: its text, split at each trial's panel."""
    if CHROMIUM is None:
        pytest.skip("no Chromium on this machine (Debian package `chromium`; .ci/run installs it)")
    url = f"http://127.0.0.1:{port}/dashboard/studies/{study_id}/trials?numbers=0,1"
    dom = chromium("--dump-dom", url, cwd=screenshot.parent, flags=LOCALHOST)
    chromium(f"--screenshot={screenshot}", "--window-size=1400,1000", url, cwd=screenshot.parent, flags=LOCALHOST)
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", re.sub(r"<(script|style).*?</\1>", "", dom, flags=re.S)))
    panels = re.split(r"Trial \d \(trial_id=\d+\)", text)
    assert len(panels) == 3, text[:2000]
    return panels[1:]
