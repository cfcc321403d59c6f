"""Sweeps on several machines, with the real parts: a PostgreSQL server on localhost as the
shared Optuna study (Optuna's RDB heartbeat: a worker killed mid-trial has its trial failed
and retried by another worker), a bare git remote and a DVC remote directory, and clones
of the project as the "machines". See docs/sweeps.md, "From one laptop to N machines".

The server comes from the machine's PostgreSQL packages (.ci/run installs them where they
are missing); the tests skip, saying why, only where no PostgreSQL can be had.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, TINY_OVERRIDES, copy_project, git_commit_all, run

pytestmark = pytest.mark.e2e

# ---------------------------------------------------------------- a PostgreSQL server on localhost


def postgres_bindir() -> Path | None:
    """Where initdb and pg_ctl are: Debian keeps them in /usr/lib/postgresql/<version>/bin."""
    for initdb in sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), reverse=True):
        return initdb.parent
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres():
    """A throwaway PostgreSQL server on 127.0.0.1 (trust auth, user `optuna`); yields a
    function that creates a fresh database and returns its URL."""
    bindir = postgres_bindir()
    if bindir is None:
        pytest.skip(
            "no PostgreSQL server on this machine (no initdb; `apt-get install -y postgresql`, as .ci/run does)"
        )
    pytest.importorskip("psycopg", reason="the PostgreSQL driver psycopg is not installed (make install)")
    root = Path(tempfile.mkdtemp(prefix="spelltune-pg-"))
    user = None
    if os.geteuid() == 0:  # initdb refuses to run as root: the server runs as an unprivileged user
        user = next((u for u in ("postgres", "nobody") if _user_exists(u)), None)
        if user is None:
            pytest.skip("running as root and no unprivileged user (postgres, nobody) to run PostgreSQL as")
        entry = pwd.getpwnam(user)
        os.chown(root, entry.pw_uid, entry.pw_gid)

    def as_user(*cmd) -> list[str]:
        return ["runuser", "-u", user, "--", *map(str, cmd)] if user else list(map(str, cmd))

    data, port = root / "data", free_port()
    subprocess.run(as_user(bindir / "initdb", "-D", data, "-U", "optuna", "--auth=trust", "-E", "UTF8"),
                   check=True, capture_output=True, text=True)
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
    start = subprocess.run(as_user(bindir / "pg_ctl", "-D", data, "-l", root / "server.log", "-w", "-o", options,
                                   "start"), capture_output=True, text=True, check=False)
    if start.returncode != 0:
        log = (root / "server.log").read_text() if (root / "server.log").exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        raise AssertionError(f"pg_ctl start failed: {start.stdout}{start.stderr}\n{log}")
    base = f"postgresql://optuna@127.0.0.1:{port}"

    def new_database(name: str) -> str:
        import psycopg

        with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"{base}/{name}"

    try:
        yield new_database
    finally:
        subprocess.run(
            as_user(bindir / "pg_ctl", "-D", data, "-m", "immediate", "stop"), capture_output=True, check=False
        )
        shutil.rmtree(root, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


# ---------------------------------------------------------------- helpers


def spelltune(*args: str) -> list[str]:
    return [sys.executable, "-m", "spelltune.cli", *args]


def tool_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DVC_EXP_BASELINE_REV", "WANDB_DIR")}
    return {**env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def start_worker(cmd: list[str], cwd: Path, log: Path, env: dict | None = None) -> subprocess.Popen:
    """A sweep worker in its own process group, so that it and its trial die together."""
    return subprocess.Popen(cmd, cwd=cwd, env={**tool_env(), **(env or {})}, stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def study_trials(url: str, name: str):
    import optuna

    from spelltune.training.pruning import open_storage

    try:
        return optuna.load_study(study_name=name, storage=open_storage(url)).get_trials(deepcopy=False)
    except KeyError:  # not created yet
        return []


def kill_mid_trial(worker: subprocess.Popen, url: str, study: str, ready, timeout: float = 600) -> int:
    """SIGKILL the worker's whole process group (as a machine that dies would) while one of
    its trials runs and `ready(trial)` holds; the trial's number."""
    from optuna.trial import TrialState as TS

    deadline = time.time() + timeout
    while time.time() < deadline and worker.poll() is None:
        mine = [t for t in study_trials(url, study)
                if str(t.user_attrs.get("worker", "")).endswith(f":{worker.pid}") and t.state == TS.RUNNING
                and t.user_attrs.get("spelltune_run")]
        if mine and ready(mine[0]):
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(60)
            return mine[0].number
        time.sleep(0.5)
    raise AssertionError(f"the worker never ran a trial to kill (exit {worker.poll()})")


def check_study(trials, run_cap: int, killed: int, survivor_pid: int) -> list:
    """Exactly run_cap complete or pruned trials; the killed one failed and was retried once,
    with its params, by the other worker; no configuration ran twice to the end."""
    from optuna.trial import TrialState as TS

    ran = [t for t in trials if t.user_attrs.get("spelltune_run")]
    finished = [t for t in ran if t.state in (TS.COMPLETE, TS.PRUNED)]
    assert len(finished) == run_cap, [(t.number, t.state.name, t.system_attrs) for t in ran]
    dead = next(t for t in ran if t.number == killed)
    assert dead.state == TS.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed]
    assert len(retries) == 1 and retries[0].state in (TS.COMPLETE, TS.PRUNED), retries
    assert retries[0].params == dead.params
    assert retries[0].user_attrs["worker"].endswith(f":{survivor_pid}")
    assert not [t for t in trials if t.state in (TS.RUNNING, TS.WAITING)]
    assert len({t.user_attrs["dvc_exp"] for t in finished}) == run_cap
    return finished


# ---------------------------------------------------------------- fast: a stand-in stage, one repository

SLOW_FAKE_STAGE = '''
import json, pathlib, time, yaml
p = yaml.safe_load(open("params.yaml"))
time.sleep(2)  # long enough to be killed mid-trial
pathlib.Path("metrics").mkdir(exist_ok=True)
json.dump({"val/loss": p["train"]["lr"]}, open("metrics/eval.json", "w"))
'''


def fake_repo(path: Path, sweep: dict) -> Path:
    path.mkdir()
    (path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    (path / "fake.py").write_text(SLOW_FAKE_STAGE)
    (path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"fake": {
        "cmd": "python fake.py", "deps": ["fake.py"], "params": ["train.lr"],
        "metrics": [{"metrics/eval.json": {"cache": False}}]}}}))
    (path / "s.yaml").write_text(yaml.safe_dump(sweep, sort_keys=False))
    for cmd in (["git", "init", "-q", "-b", "main"], ["git", "config", "user.name", "t"],
                ["git", "config", "user.email", "t@t.invalid"], ["dvc", "init", "-q"], ["git", "add", "-A"],
                ["git", "commit", "-qm", "init"]):
        run(cmd, path)
    return path


def test_a_trial_refused_by_dvcs_experiment_lock_is_launched_again_not_failed(tmp_path):
    """Another `dvc exp run` of this repository (another worker's) holds DVC's experiment
    lock when a trial starts: DVC refuses the trial's run at once; nothing of it ran, so the
    runner launches it again once the lock is free instead of failing (and retrying) it."""
    import threading

    repo = fake_repo(tmp_path / "repo", {"name": "lk", "method": "bayes",
                                         "metric": {"name": "val/loss", "goal": "minimize"},
                                         "parameters": {"train.lr": {"min": 0.1, "max": 0.2}}, "run_cap": 1})
    holder = subprocess.Popen(["sleep", "8"])
    threading.Thread(target=holder.wait, daemon=True).start()  # reaped at its end: the lock's pid is gone
    lock = repo / ".dvc" / "tmp" / "exps" / "rwlock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(json.dumps({"read": {}, "write": {"refs/exps/stash": {"pid": holder.pid, "cmd": "dvc exp run"}}}))
    proc = run(spelltune("sweep", "run", "s.yaml"), repo, timeout=300)
    out = proc.stdout + proc.stderr
    assert "trial 0 (lk-t000): another `dvc exp run` holds DVC's experiment lock; launching it again" in out, out
    assert "trial 0 (lk-t000) complete" in out and "fail:" not in out and "retried" not in out, out
    assert run(["dvc", "exp", "list", "--name-only"], repo).stdout.split() == ["lk-t000"]


def test_postgres_study_heartbeat_retries_a_killed_workers_trial(postgres, tmp_path):
    """Two workers on one PostgreSQL study; one is SIGKILLed mid-trial. Optuna's heartbeat
    (1 s, grace 5 s) fails its trial, RetryHeartbeatStaleTrialCallback enqueues it, the
    other worker runs it; the study ends with exactly run_cap finished trials."""
    url = postgres("fast")
    repo = fake_repo(tmp_path / "repo", {"name": "pf", "method": "bayes",
                                         "metric": {"name": "val/loss", "goal": "minimize"},
                                         "parameters": {"train.lr": {"min": 0.1, "max": 0.2}}, "run_cap": 4})
    cmd = spelltune("sweep", "run", "s.yaml", "--storage", url, "--heartbeat-interval", "1", "--grace-period", "5")
    a = start_worker(cmd, repo, tmp_path / "a.log")
    b = start_worker(cmd, repo, tmp_path / "b.log")

    def in_stage(trial) -> bool:  # past DVC's brief lock windows: a SIGKILLed holder is a zombie here
        log = repo / ".spelltune" / "sweeps" / "pf" / f"{trial.user_attrs.get('dvc_exp')}.log"
        return log.exists() and "Running stage 'fake'" in log.read_text()

    killed = kill_mid_trial(a, url, "pf", ready=in_stage)
    assert b.wait(300) == 0, (tmp_path / "b.log").read_text()
    out = (tmp_path / "b.log").read_text()
    trials = study_trials(url, "pf")
    check_study(trials, 4, killed, b.pid)
    assert f"trial {killed} (pf-t{killed:03d}) was interrupted" in out, out
    assert "in postgresql://optuna@127.0.0.1:" in out  # the storage it used (no password to hide here)
    # The retry holds the killed trial's params and reads val/loss = lr back from its experiment.
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == killed)
    assert retry.value == pytest.approx(retry.params["train.lr"], rel=1e-5)

    # A rerun on a finished study runs nothing and reports the same table.
    again = run(cmd, repo, timeout=120)
    assert "started" not in again.stderr
    assert again.stdout.strip().splitlines()[-1] == "trials: 4  complete: 4  pruned: 0  failed: 1"


def test_postgres_study_six_workers_never_overshoot_run_cap(postgres, tmp_path):
    """Three processes with two workers each, all starting at once, on a study of 3: exactly
    3 trials run (the others wait for a slot, then stop), each a different configuration."""
    from optuna.trial import TrialState as TS

    url = postgres("many")
    repo = fake_repo(tmp_path / "repo", {"name": "pm", "method": "bayes",
                                         "metric": {"name": "val/loss", "goal": "minimize"},
                                         "parameters": {"train.lr": {"min": 0.1, "max": 0.2}}, "run_cap": 3})
    cmd = spelltune("sweep", "run", "s.yaml", "-j", "2", "--storage", url, "--heartbeat-interval", "1",
                    "--grace-period", "5")
    workers = [start_worker(cmd, repo, tmp_path / f"w{i}.log") for i in range(3)]
    for i, w in enumerate(workers):
        assert w.wait(300) == 0, (tmp_path / f"w{i}.log").read_text()
    trials = study_trials(url, "pm")
    ran = [t for t in trials if t.user_attrs.get("spelltune_run")]
    assert [t.state for t in ran] == [TS.COMPLETE] * 3, [(t.number, t.state.name) for t in ran]
    assert len({t.params["train.lr"] for t in ran}) == 3
    assert not [t for t in trials if t.state in (TS.RUNNING, TS.WAITING)]


# ---------------------------------------------------------------- two machines, the tiny model, one leaderboard

FAST = {
    **TINY_OVERRIDES,
    "train.eval_every": 2,
    "train.val_generate_items": 4,
    "train.threads": 1,  # two "machines" on this machine's cores
}
RUN_CAP = 3


def exp_refs_on(remote: Path) -> dict[str, str]:
    """Experiments on a git remote: name -> commit."""
    out = run(["git", "ls-remote", str(remote), "refs/exps/*"], remote.parent).stdout
    return {line.rsplit("/", 1)[1]: line.split()[0] for line in out.splitlines() if line.strip()}


@pytest.mark.e2e
def test_two_machines_one_study_one_leaderboard(postgres, tiny_model, tmp_path):
    from spelltune.sweeps.overrides import set_dotted

    url = postgres("machines")
    origin, store = tmp_path / "origin.git", tmp_path / "dvc-store"

    # The team's repository: a finished baseline and the sweep file, with a shared DVC
    # remote in the committed .dvc/config (a directory here; s3://, ssh:// the same way).
    dev = tmp_path / "dev"
    copy_project(dev)
    raw = yaml.safe_load((dev / "params.yaml").read_text())
    for key, value in {"model.source": str(tiny_model), **FAST}.items():
        set_dotted(raw, key, value)
    (dev / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    (dev / "mm.yaml").write_text(yaml.safe_dump({
        "name": "mm", "project": "spelltune", "method": "bayes",
        "metric": {"name": "val/letter_position_accuracy", "goal": "maximize"},
        "parameters": {"train.lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 5e-3},
                       "lora.r": {"values": [2, 4]}},
        "run_cap": RUN_CAP,
    }, sort_keys=False))
    git_commit_all(dev)
    run(["dvc", "remote", "add", "-d", "team", str(store)], dev)
    run(["dvc", "exp", "run"], dev, timeout=600)
    run(["git", "add", "-A"], dev)
    run(["git", "commit", "-qm", "baseline"], dev)
    run(["dvc", "push"], dev, timeout=300)
    run(["git", "init", "-q", "--bare", "--initial-branch=main", str(origin)], tmp_path)
    run(["git", "remote", "add", "origin", str(origin)], dev)
    run(["git", "push", "-q", "origin", "main"], dev)

    # Two "machines": clones that pull the baseline's outputs, then one sweep command each.
    machines = []
    for name in ("machine-a", "machine-b"):
        run(["git", "clone", "-q", str(origin), name], tmp_path)
        run(["dvc", "pull"], tmp_path / name, timeout=300)
        machines.append(tmp_path / name)
    cmd = spelltune("sweep", "run", "mm.yaml", "--storage", url, "--push", "origin",
                    "--heartbeat-interval", "1", "--grace-period", "6")
    a = start_worker(cmd, machines[0], tmp_path / "a.log")
    b = start_worker(cmd, machines[1], tmp_path / "b.log")

    def training(trial) -> bool:  # its `dvc exp run` has reached the train stage
        log = machines[0] / ".spelltune" / "sweeps" / "mm" / f"{trial.user_attrs.get('dvc_exp')}.log"
        return log.exists() and "Running stage 'train'" in log.read_text()

    try:
        killed = kill_mid_trial(a, url, "mm", ready=training)
        assert b.wait(900) == 0, (tmp_path / "b.log").read_text()
    finally:
        for proc in (a, b):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    out_b = (tmp_path / "b.log").read_text()
    assert f"trial {killed} (mm-t{killed:03d}) was interrupted" in out_b, out_b
    finished = check_study(study_trials(url, "mm"), RUN_CAP, killed, b.pid)
    names = {t.user_attrs["dvc_exp"] for t in finished}

    # Every finished trial is an experiment on the git remote (none for the killed attempt).
    assert set(exp_refs_on(origin)) == names, (exp_refs_on(origin), names)
    assert f"mm-t{killed:03d}" not in exp_refs_on(origin)

    # A third machine pulls them all (git refs and, from the DVC remote, their outputs)
    # and ranks them in one leaderboard.
    third = tmp_path / "machine-c"
    run(["git", "clone", "-q", str(origin), third.name], tmp_path)
    run(["dvc", "exp", "pull", "origin"], third, timeout=300)
    listed = set(run(["dvc", "exp", "list", "--name-only"], third).stdout.split())
    assert names <= listed, listed
    board = run(spelltune("compare", "--metric", "metrics/eval.json:val/letter_position_accuracy",
                          "--out", str(tmp_path / "compare")), third, timeout=300).stdout
    assert all(name in board for name in names), board

    # Any trial's adapter comes back: dvc exp apply, then dvc checkout from the pulled cache.
    best = max(finished, key=lambda t: (t.value is not None, t.value or 0))
    name = best.user_attrs["dvc_exp"]
    run(["dvc", "exp", "apply", name], third, timeout=300)
    run(["dvc", "checkout"], third, timeout=300)
    params = yaml.safe_load((third / "params.yaml").read_text())
    assert params["train"]["lr"] == pytest.approx(best.params["train.lr"], rel=1e-5)
    adapter = third / "checkpoints" / "adapter" / "adapter_model.safetensors"
    assert adapter.stat().st_size > 0
    status = json.loads(run(["dvc", "status", "--json"], third, timeout=300).stdout or "{}")
    assert not any("checkpoints" in json.dumps(v) for v in status.values()), status  # as the experiment left it
    # Or only the adapter, with no clone: from the git remote's experiment commit and the DVC remote.
    run(["dvc", "get", str(origin), "checkpoints/adapter", "--rev", exp_refs_on(origin)[name], "-o", "got"],
        tmp_path, timeout=300)
    assert (tmp_path / "got" / "adapter_model.safetensors").read_bytes() == adapter.read_bytes()
