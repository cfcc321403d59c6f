"""Shared fixtures and helpers, importable from any folder of tests/ as `from conftest import ...`
(pyproject.toml's pytest `pythonpath`): a tiny random model with SmolLM2's real tokenizer, a
throwaway copy of this repository for end-to-end `dvc exp run` tests, the committed params.yaml
changed, the sweep command, and the repository of finished tiny experiments that several
e2e/ files read."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from spelltune.params import parse
from spelltune.sweeps.space import load_base_params

ROOT = Path(__file__).resolve().parents[1]
# What a fresh clone holds that the pipeline needs (outputs are rebuilt by the run).
REPO_FILES = ["dvc.yaml", "params.yaml", "pyproject.toml", ".dvc/config", ".dvcignore", ".gitignore", "src",
              ".dvc/plots/offline.html"]  # written by `make` (spelltune.experiments.offline_plots)

# Small enough that the whole pipeline runs in seconds on the tiny model.
TINY_OVERRIDES = {
    "data.train_words": 40,
    "data.validation_words": 4,
    "data.test_words": 4,
    "data.vocabulary_sample": 4,
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


# -- the committed params.yaml, changed (test_params.py, modeling/, stages/, cli/)
def committed() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def with_value(dotted: str, value) -> dict:
    raw = committed()
    node = raw
    *parents, leaf = dotted.split(".")
    for p in parents:
        node = node[p]
    node[leaf] = value
    return raw


def params(**model):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["model"].update(model)
    return parse(raw)


def cpu_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "SPELLTUNE_WORKERS"}
    return {**env, "CUDA_VISIBLE_DEVICES": "", **extra}  # a CPU machine, also on a GPU box


# -- sweep files and the `spelltune` command on them (sweeps/, e2e/test_sweep_failures.py)
BASE = load_base_params(ROOT / "params.yaml")


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "spelltune.cli", *args], cwd=cwd, capture_output=True, text=True)


def write(tmp_path: Path, sweep: dict | str) -> str:
    path = tmp_path / "s.yaml"
    path.write_text(sweep if isinstance(sweep, str) else yaml.safe_dump(sweep, sort_keys=False))
    return str(path)


# -- a repository of finished tiny experiments (e2e/: compare, notebooks, plots, dashboard)
EXPERIMENTS = {"lr": {"train.lr": 0.005}, "rank": {"lora.r": 4}, "seed": {"train.seed": 1}}
# train.threads 1: two queued runs share 2 cores
FAST_PROJECT = {**TINY_OVERRIDES, "train.val_generate_items": 4, "train.threads": 1}


def fast_project(dest: Path, tiny_model: Path) -> None:
    """This project in `dest` with the tiny model and the FAST_PROJECT params."""
    copy_project(dest)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    for key, value in {"model.source": str(tiny_model), **FAST_PROJECT}.items():
        section, name = key.split(".")
        params[section][name] = value
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def build_experiments_repo(dest: Path, tiny_model: Path) -> Path:
    """A git + DVC repository holding: the baseline run, committed (`main`), one workspace
    `dvc exp run` (`lr`), and two queued experiments (`rank`, `seed`) run with `dvc queue start -j 2`.
    Built once per session by each e2e/ file that reads it (test_compare.py, test_notebooks.py,
    test_plots_offline.py), read-only afterwards."""
    if (dest / ".built").exists():
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    fast_project(dest, tiny_model)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("WANDB_MODE", "disabled")  # for these runs only: they need no W&B files
        _run_experiments(dest)
    (dest / ".built").touch()
    return dest


def _run_experiments(dest: Path) -> None:
    git_commit_all(dest)
    run(["dvc", "exp", "run"], dest, timeout=900)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-qm", "baseline run"], dest)
    # Queued first: a queued experiment takes the workspace's params.yaml as it is then.
    for name in ("rank", "seed"):
        run(["dvc", "exp", "run", "--queue", "-n", name, *set_args(EXPERIMENTS[name])], dest)
    run(["dvc", "exp", "run", "-n", "lr", *set_args(EXPERIMENTS["lr"])], dest, timeout=900)
    assert "Failed" not in run_queue(dest, jobs=2)


# -- headless Chromium, offline (e2e/test_plots_offline.py, e2e/test_dashboard.py)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# No network at all: every host resolves to nothing and any proxy is a closed port.
OFFLINE = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--proxy-server=127.0.0.1:9",
           "--host-resolver-rules=MAP * ~NOTFOUND", "--virtual-time-budget=15000"]


def chromium(*args: str, cwd: Path, flags: list[str] = OFFLINE) -> str:
    profile = cwd / "profile"
    proc = subprocess.run([CHROMIUM, *flags, f"--user-data-dir={profile}", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout
