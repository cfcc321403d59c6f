"""Shared fixtures: a tiny random model with SmolLM2's real tokenizer, and a throwaway
copy of this repository for end-to-end `dvc exp run` tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What a fresh clone holds that the pipeline needs (outputs are rebuilt by the run).
REPO_FILES = ["dvc.yaml", "params.yaml", "pyproject.toml", ".dvc/config", ".dvcignore", ".gitignore", "src",
              ".dvc/plots/offline.html"]  # written by `make` (spelltune.experiments.offline_plots)

# Small enough that the whole pipeline runs in seconds on the tiny model.
TINY_OVERRIDES = {
    "data.train_words": 40,
    "data.validation_words": 4,
    "data.test_words": 4,
    "train.max_steps": 6,
    "train.warmup_steps": 1,
    "train.batch_size": 4,
    "train.log_every": 2,
    "train.eval_every": 3,
    "train.save_every": 2,
    "train.val_loss_items": 8,
    "eval.batch_size": 8,
}


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from spelltune.modeling.base import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def other_tiny(tmp_path_factory) -> Path:
    """Another base model of the same shape (other random weights)."""
    from spelltune.modeling.base import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-b") / "model", seed=1)


def user_env() -> dict[str, str]:
    """The environment of a user's shell: this venv's tools first on PATH, no DVC run's variables."""
    inherited = {k: v for k, v in os.environ.items() if k not in ("DVC_EXP_BASELINE_REV", "WANDB_DIR")}
    return {**inherited, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def run(
    cmd: list[str], cwd: Path, check: bool = True, env: dict | None = None, **kwargs
) -> subprocess.CompletedProcess:
    """Run a command the way a user's shell would, with this venv's tools on PATH
    (`env`: extra environment variables)."""
    env = {**user_env(), **(env or {})}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def copy_project(dest: Path) -> None:
    """This project's pipeline files (REPO_FILES) into `dest`, with DVC's own .gitignore."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in REPO_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        elif src.exists():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    (dest / ".dvc" / ".gitignore").write_text("/config.local\n/tmp\n/cache\n/plots/offline.html\n")


def git_commit_all(dest: Path) -> None:
    """`git init` in `dest` and commit everything in it."""
    run(["git", "init", "-q", "-b", "main"], dest)
    run(["git", "config", "user.name", "spelltune tests"], dest)
    run(["git", "config", "user.email", "tests@spelltune.invalid"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-qm", "init"], dest)


@pytest.fixture
def repo(tmp_path) -> Path:
    """A fresh git + DVC repository holding this project's pipeline."""
    dest = tmp_path / "repo"
    copy_project(dest)
    git_commit_all(dest)
    return dest


def set_args(overrides: dict) -> list[str]:
    return [arg for key, value in overrides.items() for arg in ("-S", f"{key}={value}")]


def run_queue(repo: Path, jobs: int = 2, timeout: float = 900, env: dict | None = None) -> str:
    """`dvc queue start -j N` as the README runs it, then wait until nothing is queued or
    running (spelltune.repo.run_queue), `env` added to the user's; the last `dvc queue
    status`. A timeout shows the workers' own logs."""
    from spelltune.repo import run_queue as run_until_done

    try:
        return run_until_done(jobs, poll_seconds=2, timeout=timeout, cwd=repo, env={**user_env(), **(env or {})})
    except TimeoutError as exc:
        logs = "\n".join(
            f"--- {p.name}\n{p.read_text()[-2000:]}" for p in (repo / ".dvc/tmp/exps/celery").glob("*.out")
        )
        raise AssertionError(f"{exc}\n{logs}") from None
