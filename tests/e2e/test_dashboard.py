"""`spelltune dashboard`: optuna-dashboard over a mirror of the repository's Bayesian studies
and DVC experiments, refreshed while trials run; checked through its JSON API and in a real
headless Chromium that can reach nothing but the dashboard."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import CHROMIUM, OFFLINE, chromium, fast_project, git_commit_all, run, run_queue, set_args, user_env
from spelltune.experiments.runs import CURVES_DIR

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

        queue = threading.Thread(target=run_queue, args=(repo, 1), kwargs={"env": env}, daemon=True)
        queue.start()
        # Live: grid-001 is held still (SIGSTOP) once it has validated, so that the page is
        # read while it runs however fast the machine is.
        training = paused_after_first_validation(max_steps=200)
        try:
            live = wait_for(port, lambda t: state(t, "grid-000") == "Complete" and state(t, "grid-001") == "Running"
                            and t["grid-001"]["intermediate_values"], timeout=180)
            pages = trial_pages(port, live["grid-001"]["study"]["study_id"], tmp_path / "live.png")
        finally:
            training.resume()
        assert 1 <= len(live["grid-001"]["intermediate_values"]) < 10
        [finished] = [p for p in pages if "dvc_exp grid-000" in p]
        assert f"Value {live['grid-000']['values'][0]:g}" in finished and "Complete" in finished
        [running] = [p for p in pages if "dvc_exp grid-001" in p]
        assert "Running" in running and "Intermediate Values" in running

        done = wait_for(port, lambda t: state(t, "grid-000") == state(t, "grid-001") == "Complete")
        queue.join(timeout=600)
        assert len(done["grid-001"]["intermediate_values"]) == 10  # every 20 of 200 steps
        pages = trial_pages(port, done["grid-001"]["study"]["study_id"], tmp_path / "done.png")
        for name in ("grid-000", "grid-001"):
            [page] = [p for p in pages if f"dvc_exp {name}" in p]
            assert f"Value {done[name]['values'][0]:g}" in page and "Complete" in page
        assert "Intermediate Values" in page  # grid-001's
    finally:
        dashboard.terminate()
        dashboard.wait(timeout=30)
        log.close()
    # A refresh may fail once while DVC removes a finished run's temporary workspace; it is retried.
    assert "Traceback" not in (tmp_path / "dashboard.log").read_text()


def state(trials: dict, name: str) -> str | None:
    return trials.get(name, {}).get("state")  # a study being rebuilt lists no trials for a moment


def paused_after_first_validation(max_steps: int, timeout: float = 600):
    """The queued run's train stage of `max_steps` steps, stopped (SIGSTOP) once its temporary
    workspace's curve of METRIC has a point."""
    import psutil

    deadline = time.time() + timeout
    while time.time() < deadline:
        for proc in psutil.process_iter(["cmdline", "cwd"]):
            # The stage's Python itself, not the shell DVC runs it through.
            if (proc.info["cmdline"] or [])[1:3] != ["-m", "spelltune.stages.train"]:
                continue
            workspace = Path(proc.info["cwd"] or "/nonexistent")
            try:
                steps = yaml.safe_load((workspace / "params.yaml").read_text())["train"]["max_steps"]
                rows = (workspace / CURVES_DIR / f"{METRIC}.tsv").read_text().splitlines()
            except (OSError, KeyError, TypeError):
                continue
            if steps == max_steps and len(rows) >= 2:
                proc.suspend()
                return proc
        time.sleep(0.2)
    raise AssertionError(f"no train stage of {max_steps} steps validated within {timeout:g} s")


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
