"""Checkpoints, resume and early stopping, with real processes: a run killed (Ctrl-C,
SIGTERM or SIGKILL) and rerun ends exactly where an uninterrupted run ends; a corrupt checkpoint is
skipped; a diverging run stops with one line and keeps its last good checkpoint; a
checkpoint of other params is never resumed from; early stopping restores the best.
(The checkpoint store on its own: training/test_checkpoints.py; a NaN loss: training/test_trainer.py.)"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import TINY_OVERRIDES, run, set_args
from spelltune.training import checkpoints

pytestmark = pytest.mark.e2e

CURVES = "metrics/train/plots/metrics"
# Enough steps that a kill lands mid-run; a checkpoint every 2 steps, keeping 2 + the best.
RESUME_OVERRIDES = {**TINY_OVERRIDES, "train.max_steps": 16, "train.save_every": 2, "train.eval_every": 4}
NOT_REPRODUCIBLE = ("time/", "throughput/", "memory/")  # and any */eval_time_seconds, */wallclock_hours


def exp_run(repo: Path, overrides: dict, check: bool = True) -> subprocess.CompletedProcess:
    return run(["dvc", "exp", "run", *set_args(overrides)], repo, check=check, timeout=900)


def curve(repo: Path, name: str) -> list[tuple[int, float]]:
    rows = (repo / CURVES / f"{name}.tsv").read_text().splitlines()[1:]
    return [(int(r.split("\t")[1]), float(r.split("\t")[2])) for r in rows]


def reproducible(metrics: dict) -> dict:
    return {
        k: v for k, v in metrics.items()
        if not k.startswith(NOT_REPRODUCIBLE) and not k.endswith(("eval_time_seconds", "wallclock_hours"))
    }


def kill_during_training(repo: Path, overrides: dict, at_checkpoint: int, sig: signal.Signals) -> None:
    """Start `dvc exp run`, wait for checkpoint-<at_checkpoint>, then send `sig` to the
    whole process group (dvc and the stage it runs) and wait for it to end."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    log = repo.parent / "killed-run.log"  # what the run said, for a failure message
    with log.open("w") as out:
        proc = subprocess.Popen(
            ["dvc", "exp", "run", *set_args(overrides)], cwd=repo, env=env, start_new_session=True,
            stdout=out, stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        if list(repo.glob(f".spelltune/resume/*/checkpoint-{at_checkpoint}")):
            break
        time.sleep(0.02)
    os.killpg(proc.pid, sig)
    proc.wait()
    # (A later checkpoint may have replaced it by the time the signal landed.)
    steps = [checkpoints.step_of(p) for p in repo.glob(".spelltune/resume/*/checkpoint-*")]
    assert any(step >= at_checkpoint for step in steps), (
        f"the run ended before the kill (checkpoints: {steps}, exit {proc.returncode}); "
        f"its last output: {log.read_text()[-2000:]}"
    )
    assert not (repo / "metrics" / "summary.json").exists(), "the run finished before it was killed"


def test_killed_run_resumes_to_the_uninterrupted_result(repo, tiny_model, tmp_path):
    overrides = {"model.source": str(tiny_model), **RESUME_OVERRIDES}
    uninterrupted = tmp_path / "uninterrupted"
    shutil.copytree(repo, uninterrupted, symlinks=True)
    exp_run(uninterrupted, overrides)

    # 1. Killed at a random checkpoint, by Ctrl-C, SIGTERM or kill -9 (one per run, at random).
    at, sig = random.choice([4, 6, 8]), random.choice([signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
    print(f"killed with {sig.name} after checkpoint-{at}")
    kill_during_training(repo, overrides, at, sig)
    (store,) = (repo / ".spelltune/resume").iterdir()  # one store, named by the params fingerprint
    saved = checkpoints.checkpoints(store)
    assert saved and checkpoints.step_of(saved[0]) >= at

    # 2. Other params (as a queued experiment with another lr would start): the killed run's
    #    checkpoints are not resumed from; the run says so in one line, starts fresh, and
    #    leaves them for a rerun of the killed params.
    before_other = set((repo / "wandb").glob("offline-run-*"))
    other = exp_run(repo, {**overrides, "train.lr": 5e-4})
    other_runs = set((repo / "wandb").glob("offline-run-*")) - before_other
    assert f"those of other params ({store.name}) are not resumed from" in other.stdout + other.stderr
    assert json.loads((repo / "metrics/summary.json").read_text())["resumed_from_step"] is None
    assert curve(repo, "time/gradient_steps")[0][0] == 2
    assert checkpoints.checkpoints(store) == saved
    run(["git", "checkout", "--", "params.yaml"], repo)

    # 3. The newest checkpoint gets corrupted; a rerun that diverges at once (a tiny
    #    grad-norm limit, which is no part of the params fingerprint) skips the corrupt
    #    checkpoint, resumes from the one before, stops with one line, exits non-zero.
    newest, previous = saved[0], saved[1]
    weights = newest / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    diverged = exp_run(repo, {**overrides, "train.grad_norm_limit": 1e-9}, check=False)
    log = diverged.stdout + diverged.stderr
    assert diverged.returncode != 0
    assert f"skipping {newest}: adapter_model.safetensors does not match its checksum" in log
    resumed_at = checkpoints.step_of(previous)
    assert f"training stopped at step {resumed_at + 1}: the gradient norm is" in log
    assert "(train.grad_norm_limit = 1e-09); the last good checkpoint is kept" in log
    assert checkpoints.problem(previous) is None  # the last good checkpoint is kept
    run(["git", "checkout", "--", "params.yaml"], repo)

    # 4. A plain rerun resumes from the last good checkpoint and finishes.
    final = exp_run(repo, overrides)
    assert f"resuming from {previous}" in final.stdout + final.stderr
    assert not store.exists()  # a finished run leaves nothing to resume
    kept = sorted(p.name for p in (repo / "checkpoints").iterdir())
    best_step = json.loads((repo / "metrics/summary.json").read_text())["best_step"]
    assert kept == sorted({"adapter", "checkpoint-16", f"checkpoint-{best_step}"})

    # Exactly the uninterrupted run's result: weights, metrics, curves.
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        assert (repo / "checkpoints/adapter" / name).read_bytes() == (
            uninterrupted / "checkpoints/adapter" / name
        ).read_bytes()
    for name in ("eval.json",):
        a, b = (json.loads((r / "metrics" / name).read_text()) for r in (repo, uninterrupted))
        assert reproducible(a) == reproducible(b)
    resumed, whole = (json.loads((r / "metrics/summary.json").read_text()) for r in (repo, uninterrupted))
    assert reproducible(resumed["final"]) == reproducible(whole["final"])
    assert reproducible(resumed["best"]) == reproducible(whole["best"]) and resumed["best_step"] == whole["best_step"]
    assert resumed["resumed_from_step"] == resumed_at and whole["resumed_from_step"] is None
    for name in ("train/loss", "train/grad_norm", "val/loss", "val/letter_position_accuracy", "time/gradient_steps"):
        assert curve(repo, name) == curve(uninterrupted, name), name  # no step twice, none missing
    hours = [v for _, v in curve(repo, "time/wallclock_hours")]
    assert hours == sorted(hours)  # wall-clock time carries on from the checkpoint

    # W&B: the resumed runs continue the killed run (one run id), from after the checkpoint.
    ids = {p.name.rsplit("-", 1)[-1] for p in set((repo / "wandb").glob("offline-run-*")) - other_runs}
    assert len(ids) == 1


def test_early_stopping_restores_the_best_checkpoint(repo, tiny_model):
    # The untrained tiny model's letter accuracy stays at 0: no evaluation after the
    # first one improves it, so patience 2 stops the run at the third evaluation.
    overrides = {
        "model.source": str(tiny_model),
        **TINY_OVERRIDES,
        "train.max_steps": 12,
        "train.eval_every": 2,
        "train.save_every": 2,
        "train.early_stop_patience": 2,
        "train.early_stop_metric": "val/letter_position_accuracy",
    }
    exp_run(repo, overrides)
    summary = json.loads((repo / "metrics/summary.json").read_text())
    assert summary["early_stop_reason"] == "early_stopping"
    assert summary["stopped_at_step"] == 6 and summary["best_step"] == 2
    best = repo / "checkpoints/checkpoint-2"
    assert best.exists()  # kept by the rotation as the best
    restored = repo / "checkpoints/adapter/adapter_model.safetensors"
    assert restored.read_bytes() == (best / "adapter_model.safetensors").read_bytes()
    assert "early stopping at step 6" in (repo / "plots/report.md").read_text()


