"""End to end: real sweeps of tiny DVC experiments. A grid through the DVC queue with two
workers, a random search queued under its run_cap, and a Bayesian search shared by two
worker processes through one Optuna journal file, one of them killed mid-trial and resumed."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, TINY_OVERRIDES, copy_project, git_commit_all, run, run_queue

pytestmark = pytest.mark.e2e

# Even smaller than TINY_OVERRIDES: a trial is mostly process start-up anyway.
FAST = {
    **TINY_OVERRIDES,
    "train.eval_every": 2,
    "train.val_generate_items": 4,
    "train.threads": 1,  # two workers on two cores
}


def spelltune(*args: str) -> list[str]:
    return [sys.executable, "-m", "spelltune.cli", *args]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, tiny_model) -> Path:
    """A repository whose committed baseline is a finished tiny run (as the project
    commits dvc.lock and metrics/), so trials rerun only train, evaluate and report."""
    from spelltune.sweeps.overrides import set_dotted

    dest = tmp_path_factory.mktemp("sweep") / "repo"
    copy_project(dest)
    raw = yaml.safe_load((dest / "params.yaml").read_text())
    for key, value in {"model.source": str(tiny_model), **FAST}.items():
        set_dotted(raw, key, value)
    (dest / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    git_commit_all(dest)
    run(["dvc", "exp", "run"], dest, timeout=600)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-qm", "baseline"], dest)
    return dest


@pytest.fixture
def repo_copy(baseline, tmp_path) -> Path:
    dest = tmp_path / "repo"
    shutil.copytree(baseline, dest, symlinks=True)
    return dest


def write(path: Path, sweep: dict) -> Path:
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return path


def shown_experiments(repo: Path) -> dict[str, dict]:
    """name -> `dvc exp show --json` data, plus `summary` and `scores`: the run's
    metrics/summary.json and metrics/eval.json (outputs, not DVC metrics), read from the
    experiment's commit."""
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    exps = {}
    for row in shown:
        for exp in row.get("experiments") or []:
            rev = exp["revs"][0]
            outputs = {}
            for key, path in (("summary", "metrics/summary.json"), ("scores", "metrics/eval.json")):
                text = run(["git", "show", f"{rev['rev']}:{path}"], repo, check=False).stdout
                outputs[key] = json.loads(text) if text else None
            exps[exp.get("name")] = {**rev["data"], **outputs}
    return exps


def test_plain_dvc_queue_workers_share_the_cores(repo_copy):
    """`dvc exp run --queue` + `dvc queue start -j 2`, no spelltune command in between: each
    train stage finds the two queue workers and takes cores // 2 torch threads."""
    run(["dvc", "exp", "run", "--queue", "-S", "train.threads=0", "-S", "train.lr=3e-3,4e-3"], repo_copy)
    status = run_queue(repo_copy, jobs=2, timeout=600)
    assert "Success" in status and "Failed" not in status, status
    runs = [exp for exp in shown_experiments(repo_copy).values()
            if exp["params"]["params.yaml"]["data"]["train"]["lr"] in (3e-3, 4e-3)]
    assert len(runs) == 2
    for exp in runs:
        worker = exp["summary"]["worker"]
        assert worker["workers"] == 2 and worker["workers_from"] == "dvc queue workers", worker
        assert worker["threads"] == max(1, len(os.sched_getaffinity(0)) // 2)


def test_trials_leave_test_out_and_finalize_scores_the_chosen_once(repo_copy):
    """Trials choose on validation (test/skipped, no test/ score); `sweep finalize` scores
    the best on test as `<name>-test`, training nothing again, and a second finalize
    scores nothing again."""
    write(repo_copy / "two.yaml", {
        "method": "grid",
        "metric": {"name": "val/loss", "goal": "minimize"},
        "parameters": {"train.lr": {"values": [1e-3, 2e-3]}},
    })
    proc = run(spelltune("sweep", "run", "two.yaml", "-j", "2"), repo_copy, timeout=900)
    assert proc.stdout.strip().splitlines()[-1] == "trials: 2  succeeded: 2  failed: 0", proc.stdout
    exps = shown_experiments(repo_copy)
    for name in ("two-001", "two-002"):
        scores = exps[name]["scores"]
        assert scores["test/skipped"] == 1 and not any(k.startswith("test/spelling") for k in scores), scores
        assert "val/spelling_exact_match" in scores and "vocabulary/top1k/spelling_exact_match" in scores
        assert "common" not in exps[name]["metrics"]["metrics/headline.json"]["data"]  # no blank shown as a zero
    best = min(("two-001", "two-002"), key=lambda n: exps[n]["scores"]["val/loss"] if "val/loss" in
               exps[n]["scores"] else exps[n]["summary"]["final"]["val/loss"])

    final = run(spelltune("sweep", "finalize", "two.yaml", "--top", "1"), repo_copy, timeout=900)
    assert f"finalists by val/loss: {best}" in final.stderr and "trained again" not in final.stderr, final.stderr
    assert final.stdout.startswith(f"{best}: test/spelling_exact_match 0."), final.stdout
    scored = shown_experiments(repo_copy)[f"{best}-test"]
    assert "test/skipped" not in scored["scores"] and 0 <= scored["scores"]["test/spelling_exact_match"] <= 1
    assert scored["params"]["params.yaml"]["data"]["train"]["lr"] == exps[best]["params"]["params.yaml"]["data"][
        "train"]["lr"]
    again = run(spelltune("sweep", "finalize", "two.yaml", "--top", "1"), repo_copy, timeout=300)
    assert f"{best}: already scored on test ({best}-test)" in again.stderr and again.stdout == final.stdout


def test_grid_through_the_queue_with_two_workers(repo_copy, tmp_path):
    sweep = write(repo_copy / "grid.yaml", {
        "method": "grid",
        "metric": {"name": "val/loss", "goal": "minimize"},
        "parameters": {"lora.r": {"values": [2, 4]}, "train.lr": {"values": [1e-3, 2e-3]}},
    })
    proc = run(spelltune("sweep", "run", "grid.yaml", "-j", "2"), repo_copy, timeout=900)
    assert proc.stdout.strip().splitlines()[-1] == "trials: 4  succeeded: 4  failed: 0", proc.stdout
    exps = shown_experiments(repo_copy)
    names = [f"grid-{i:03d}" for i in range(1, 5)]
    assert set(names) <= set(exps), exps.keys()
    seen = set()
    for name in names:
        data = exps[name]
        params = data["params"]["params.yaml"]["data"]
        seen.add((params["lora"]["r"], params["train"]["lr"]))
        assert 0 <= data["scores"]["val/letter_position_accuracy"] <= 1
    assert seen == {(2, 1e-3), (2, 2e-3), (4, 1e-3), (4, 2e-3)}
    # Each trial got -S train.threads=1 (two workers on two cores); the base model's scores
    # do not depend on it, so no trial scored the base model again.
    for name in names:
        log = run(["dvc", "queue", "logs", name], repo_copy).stdout
        assert "Running stage 'train'" in log and "Running stage 'evaluate_base'" not in log, log[-2000:]

    # The same command again: everything finished, nothing is queued or run.
    again = run(spelltune("sweep", "run", "grid.yaml", "-j", "2"), repo_copy, timeout=300)
    assert "4 of 4 already finished" in again.stderr
    assert "queued grid-" not in again.stderr
    assert again.stdout.strip().splitlines()[-1] == "trials: 4  succeeded: 4  failed: 0"
    assert sweep.exists()

    # sweep.yaml edited: grid-003 and grid-004 now name other configurations, so they are
    # queued again under new names rather than skipped.
    write(
        sweep,
        {
            **yaml.safe_load(sweep.read_text()),
            "parameters": {"lora.r": {"values": [2, 8]}, "train.lr": {"values": [1e-3, 2e-3]}},
        },
    )
    edited = run(spelltune("sweep", "run", "grid.yaml", "--no-start"), repo_copy, timeout=300)
    assert "2 of 4 already finished" in edited.stderr and "queued: 2" in edited.stdout
    assert "queued grid-003-2: lora.r=8 train.lr=0.001" in edited.stderr, edited.stderr
    run(["dvc", "queue", "remove", "--all"], repo_copy)

    # Another machine gets the experiments through a git remote (and their outputs
    # through a DVC remote): dvc exp push / dvc exp pull.
    remote, store, clone = tmp_path / "remote.git", tmp_path / "dvc-store", tmp_path / "clone"
    run(["git", "init", "-q", "--bare", str(remote)], tmp_path)
    run(["git", "remote", "add", "origin", str(remote)], repo_copy)
    run(["git", "push", "-q", "origin", "main"], repo_copy)
    run(["dvc", "remote", "add", "--local", "-d", "store", str(store)], repo_copy)
    run(["dvc", "exp", "push", "origin", "grid-001", "grid-004"], repo_copy, timeout=300)
    run(["git", "clone", "-q", "-b", "main", str(remote), str(clone)], tmp_path)
    run(["dvc", "remote", "add", "--local", "-d", "store", str(store)], clone)
    run(["dvc", "exp", "pull", "origin", "grid-004"], clone, timeout=300)
    assert "grid-004" in run(["dvc", "exp", "list", "--name-only"], clone).stdout
    run(["dvc", "exp", "apply", "grid-004"], clone, timeout=300)
    applied = yaml.safe_load((clone / "params.yaml").read_text())
    assert (applied["lora"]["r"], applied["train"]["lr"]) == (4, 2e-3)
    assert (clone / "checkpoints" / "adapter" / "adapter_model.safetensors").exists()


def test_random_search_queues_run_cap_configurations(repo_copy):
    write(repo_copy / "rand.yaml", {
        "method": "random",
        "parameters": {
            "train.lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2},
            "lora.r": {"values": [2, 4, 8, 16]},
            "lora.alpha": {"values": [4, 8]},
        },
        "constraints": ["lora.alpha >= lora.r"],
        "run_cap": 3,
        "seed": 7,
    })
    plan = run(spelltune("sweep", "plan", "rand.yaml"), repo_copy).stdout.splitlines()
    assert plan[-1] == "trials: 3"
    planned = [line.split(None, 1)[1] for line in plan if line.startswith("  rand-")]
    assert len(planned) == 3
    proc = run(spelltune("sweep", "run", "rand.yaml", "--no-start"), repo_copy, timeout=300)
    assert "queued: 3" in proc.stdout
    queued = [line for line in run(["dvc", "queue", "status"], repo_copy).stdout.splitlines() if "Queued" in line]
    assert sorted(line.split()[1] for line in queued) == ["rand-001", "rand-002", "rand-003"]
    for line in planned:  # what was queued is what plan showed, and it keeps the constraint
        cfg = dict(kv.split("=") for kv in line.split())
        assert float(cfg["lora.alpha"]) >= float(cfg["lora.r"])
    assert "queued rand-001: " + planned[0] in proc.stderr
    run(["dvc", "queue", "remove", "--all"], repo_copy)


def study_trials(storage: Path, name: str):
    import optuna

    from spelltune.training.pruning import open_storage

    try:
        return optuna.load_study(study_name=name, storage=open_storage(str(storage))).get_trials(deepcopy=False)
    except KeyError:
        return []


def test_bayes_two_workers_share_one_study_prune_and_resume(repo_copy, tmp_path):
    from optuna.trial import TrialState as TS

    write(repo_copy / "bayes.yaml", {
        "name": "bo",
        "method": "bayes",
        "metric": {"name": "val/loss", "goal": "minimize"},
        "parameters": {
            "train.lr": {"distribution": "log_uniform_values", "min": 1e-5, "max": 0.5},
            "lora.r": {"values": [2, 4, 8]},
        },
        "run_cap": 6,
        # min_iter counts validation evaluations (W&B's unit): evaluation 1 is step 2. The
        # max is train.max_steps (6): with eta 4 that is one bracket with one rung, at step
        # 2, where only the best so far goes on, so a trial is pruned unless each of the ~7
        # arrives better than all before it (~1/7!). With eta 2 (two brackets of ~3 trials)
        # that happened in CI: the lrs came in improving, and none was pruned.
        "early_terminate": {"type": "hyperband", "min_iter": 1, "eta": 4},
    })
    journal = tmp_path / "shared" / "bo.journal"  # as on a shared filesystem
    cmd = spelltune("sweep", "run", "bayes.yaml", "--storage", str(journal))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("DVC_EXP_BASELINE_REV", None)

    def start():
        return subprocess.Popen(cmd, cwd=repo_copy, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)

    a, b = start(), start()
    # Kill worker A (and its `dvc exp run`) in the middle of its second trial, as a crash would.
    killed_trial = None
    deadline = time.time() + 600
    while time.time() < deadline and a.poll() is None:
        trials = study_trials(journal, "bo")
        mine = [t for t in trials if str(t.user_attrs.get("worker", "")).endswith(f":{a.pid}")]
        running = [t for t in mine if t.state == TS.RUNNING]
        if any(t.state in (TS.COMPLETE, TS.PRUNED) for t in mine) and running:
            time.sleep(3)
            os.killpg(a.pid, signal.SIGKILL)
            killed_trial = running[0].number
            break
        time.sleep(1)
    a.wait(60)
    assert killed_trial is not None, "worker A never started a second trial"
    # Rerunning the same command (while B still works) resumes: the killed trial runs
    # again, nothing else does.
    c = start()
    out_c, _ = c.communicate(timeout=900)
    out_b, _ = b.communicate(timeout=900)
    assert b.returncode == 0, out_b
    assert c.returncode == 0, out_c
    # B (whose next trial reaps it: same host, dead pid) or C (at its start) fails it and
    # enqueues it again through Optuna's RetryHeartbeatStaleTrialCallback.
    assert f"trial {killed_trial} (bo-t{killed_trial:03d}) was interrupted" in out_b + out_c

    trials = [t for t in study_trials(journal, "bo") if t.user_attrs.get("spelltune_run")]
    workers = {t.user_attrs["worker"].rsplit(":", 1)[1] for t in trials}
    assert {str(a.pid), str(b.pid)} <= workers  # two processes worked on one study
    killed = next(t for t in trials if t.number == killed_trial)
    assert killed.state == TS.FAIL and killed.user_attrs["result"] == "interrupted"
    again = [t for t in trials if t.system_attrs.get("failed_trial") == killed_trial]
    assert len(again) == 1 and again[0].state in (TS.COMPLETE, TS.PRUNED)
    assert again[0].params == killed.params
    finished = [t for t in trials if t.state in (TS.COMPLETE, TS.PRUNED)]
    configs = [t for t in trials if "failed_trial" not in t.system_attrs]
    assert len(finished) == 6 and len(configs) == 6
    assert len({tuple(sorted(t.params.items())) for t in configs}) == 6  # the workers proposed different configurations
    # Every finished trial is a DVC experiment, and each ran once.
    exps = shown_experiments(repo_copy)
    names = [t.user_attrs["dvc_exp"] for t in finished]
    assert len(set(names)) == 6 and set(names) <= set(exps)
    for t in finished:
        data = exps[t.user_attrs["dvc_exp"]]
        lr = data["params"]["params.yaml"]["data"]["train"]["lr"]
        assert lr == pytest.approx(t.params["train.lr"], rel=1e-5)
        if t.state == TS.COMPLETE:
            # val/loss is not in eval.json: it is the training run's last validation loss
            assert t.value == pytest.approx(data["summary"]["final"]["val/loss"])
    report = run(cmd, repo_copy, timeout=300)  # all done: a rerun runs nothing and reports
    assert "started" not in report.stderr
    assert report.stdout.strip().splitlines()[-1].startswith("trials: 6  ")

    pruned = [t for t in finished if t.state == TS.PRUNED]
    assert pruned, [(t.number, t.state, t.intermediate_values) for t in finished]
    for t in pruned:  # stopped cleanly, and its experiment is kept
        summary = exps[t.user_attrs["dvc_exp"]]["summary"]
        assert summary["early_stop_reason"] == "pruned"


def test_bayes_runner_killed_alone_lets_its_trial_finish_and_never_runs_it_twice(repo_copy, tmp_path):
    """kill -9 of the Bayesian runner only: its trial's own `dvc exp run` goes on. A rerun
    sees that process alive (not the runner's dead pid), neither fails the trial nor runs its
    configuration again, and records its result when it ends."""
    import psutil
    from optuna.trial import TrialState as TS

    write(repo_copy / "solo.yaml", {
        "name": "solo", "method": "bayes", "metric": {"name": "val/loss", "goal": "minimize"},
        "parameters": {"train.lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 0.1}},
        "run_cap": 2,
    })
    journal = tmp_path / "solo.journal"
    cmd = spelltune("sweep", "run", "solo.yaml", "--storage", str(journal))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("DVC_EXP_BASELINE_REV", None)
    runner = subprocess.Popen(cmd, cwd=repo_copy, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    deadline, first = time.time() + 300, None
    while time.time() < deadline and first is None:
        first = next((t for t in study_trials(journal, "solo") if t.user_attrs.get("process")), None)
        time.sleep(0.5)
    assert first is not None, "the runner never launched a trial"
    orphan = psutil.Process(first.user_attrs["process"]["pid"])
    os.kill(runner.pid, signal.SIGKILL)  # the runner alone, not its process group
    runner.wait(30)
    try:
        assert orphan.is_running()
        rerun = run(cmd, repo_copy, timeout=900)
    finally:
        with contextlib.suppress(psutil.Error):
            orphan.kill()
    out = rerun.stdout + rerun.stderr
    assert f"trial {first.number} (solo-t{first.number:03d}): its runner stopped, its run goes on" in out
    assert "interrupted" not in out
    trials = [t for t in study_trials(journal, "solo") if t.user_attrs.get("spelltune_run")]
    assert [t.state for t in trials] == [TS.COMPLETE, TS.COMPLETE], [(t.number, t.state) for t in trials]
    assert not [t for t in trials if "failed_trial" in t.system_attrs]  # nothing was retried
    exps = shown_experiments(repo_copy)
    names = [t.user_attrs["dvc_exp"] for t in trials]
    assert len(set(names)) == 2 and set(names) <= set(exps)
    orphaned = next(t for t in trials if t.number == first.number)
    assert orphaned.value == pytest.approx(exps[orphaned.user_attrs["dvc_exp"]]["summary"]["final"]["val/loss"])


def wandb_records(path: Path):
    """The records of a W&B run file (`run-<id>.wandb`, LevelDB's log format: 32 KiB blocks,
    7-byte chunk headers), as W&B's protobuf Records; read to see what W&B would receive."""
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, buf = 32768, 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # the block's tail is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # full, last
            rec = pb.Record()
            rec.ParseFromString(buf + chunk if kind == 4 else chunk)
            yield rec
            buf = b""
        elif kind in (2, 3):  # first, middle
            buf += chunk


# What W&B's server sends `wandb agent` for one run of `wandb sweep sweep.yaml` (recorded
# shape: the agent's heartbeat answer); the agent turns it into the command line below.
RECORDED_RUN = {"type": "run", "run_id": "q7x2k9ab", "program": "src/spelltune/cli.py", "args": {
    "train.lr": {"value": 0.003}, "lora.r": {"value": 4}, "lora.alpha": {"value": 8},
    "train.warmup_steps": {"value": 1}, "lora.dropout": {"value": 0.05}}}


def test_wandb_agent_command_line_one_experiment_one_wandb_run(repo_copy):
    """The command `wandb agent` runs for sweep.yaml (built by W&B's own functions from the
    file's `command` and a recorded run), run for real with W&B offline: one DVC experiment,
    and one W&B run id holding the training curves (the metric logged once per evaluation,
    which is what W&B's hyperband counts) and, in its summary, the evaluate stage's val/test
    scores (what W&B's bayes optimises). W&B offline cannot run the sweep itself: its
    controller (choosing configurations, stopping runs) lives on W&B's server."""
    from wandb.sdk.launch.sweeps import utils as sweep_utils

    from spelltune.sweeps.schema import load_sweep
    from spelltune.sweeps.space import Space, load_base_params
    from spelltune.sweeps.study import pruner_spec

    for name in ("sweep.yaml", "sweep.spelltune.yaml"):
        shutil.copy(ROOT / name, repo_copy / name)
    run(["git", "add", "-A"], repo_copy)
    run(["git", "commit", "-qm", "sweep files"], repo_copy)
    sweep = yaml.safe_load((repo_copy / "sweep.yaml").read_text())
    # As wandb's Agent._command_run builds it (wandb/wandb_agent.py)
    args = sweep_utils.create_sweep_command_args(RECORDED_RUN)
    macros = {**args, "interpreter": ["python"], "program": [RECORDED_RUN["program"]], "env": ["/usr/bin/env"]}
    argv = []
    for part in sweep_utils.create_sweep_command(list(sweep["command"])):
        argv += macros.get(part[2:-1], []) if part.startswith("${") else [part]
    assert argv[:7] == ["/usr/bin/env", "python", "-m", "spelltune.cli", "sweep", "wandb-agent", "sweep.yaml"]
    assert "--train.lr=0.003" in argv and "--lora.r=4" in argv

    env = {"WANDB_MODE": "offline", "WANDB_RUN_ID": RECORDED_RUN["run_id"], "WANDB_SWEEP_ID": "sw33pid0",
           "WANDB_PROJECT": sweep["project"]}
    proc = run(argv, repo_copy, env=env, timeout=600)
    name = f"spell-wandb-{RECORDED_RUN['run_id']}"
    assert f"-> DVC experiment {name}" in proc.stderr
    exp = shown_experiments(repo_copy)[name]
    params = exp["params"]["params.yaml"]["data"]
    assert (params["train"]["lr"], params["lora"]["r"], params["lora"]["alpha"]) == (0.003, 4, 8)
    scores = exp["scores"]

    runs = sorted((repo_copy / "wandb").glob(f"offline-run-*-{RECORDED_RUN['run_id']}"))
    assert len(runs) == 2, runs  # the train stage's run and the evaluate stage's resume of it
    history, summary, ids = [], {}, set()
    for run_dir in runs:
        for rec in wandb_records(run_dir / f"run-{RECORDED_RUN['run_id']}.wandb"):
            kind = rec.WhichOneof("record_type")
            if kind == "run":
                ids.add(rec.run.run_id)
            elif kind == "history":
                history.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item})
            elif kind == "summary" and run_dir == runs[-1]:
                summary.update({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.summary.update})
    assert ids == {RECORDED_RUN["run_id"]}
    metric = sweep["metric"]["name"]
    logged = [h[metric] for h in history if metric in h]
    assert len(logged) == FAST["train.max_steps"] // FAST["train.eval_every"]  # W&B's hyperband counts these
    assert summary[metric] == pytest.approx(scores[metric])  # the final val score: what W&B optimises
    # a sweep trial leaves test for `spelltune sweep finalize`: W&B gets no test score to choose by
    assert scores["test/skipped"] == 1 and not any(k.startswith("test/letter") for k in summary)
    # Optuna's rung for the same min_iter: that many evaluations, in optimizer steps
    space = Space(load_sweep(repo_copy / "sweep.yaml"), load_base_params(repo_copy / "params.yaml"))
    spec = pruner_spec(space.sweep, space)
    assert spec["min_resource"] == sweep["early_terminate"]["min_iter"] * FAST["train.eval_every"]
