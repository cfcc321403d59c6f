"""The git and DVC commands the experiment tools run: a file at a revision, `dvc` itself,
and the DVC queue run until it is done."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

QUEUE_STATES = ("Queued", "Running", "Success", "Failed")
RESTART_AFTER_SECONDS = 8.0  # idle workers this long are started again


def tool(name: str) -> str:
    """The venv's own `dvc` when we run from one, else whatever is on PATH."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else name


def dvc(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([tool("dvc"), *args], capture_output=True, text=True, **kwargs)


def git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout


def git_show(rev: str, path: str, cwd: Path | None = None) -> str | None:
    """The text of `path` at git revision `rev`, or None where it has none."""
    proc = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=cwd, capture_output=True, text=True, check=False)
    return proc.stdout if proc.returncode == 0 else None


def parse_queue_status(text: str) -> dict[str, str]:
    """`dvc queue status` output as experiment name -> Queued | Running | Success | Failed."""
    status = {}
    for line in text.splitlines()[1:]:
        parts = line.split()
        if not parts or line.startswith("Worker"):
            continue
        if len(parts) >= 4 and parts[-1] in QUEUE_STATES:
            status[parts[1]] = parts[-1]
    return status


def start_queue(jobs: int, cwd: Path | None = None, env: dict | None = None) -> None:
    # The workers are daemons: they must not hold our stdout (a pipe would never close).
    subprocess.run([tool("dvc"), "queue", "start", "-j", str(jobs)], cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)


def run_queue(jobs: int, names: list[str] | None = None, poll_seconds: float = 10, timeout: float | None = None,
              cwd: Path | None = None, env: dict | None = None,
              on_status: Callable[[dict[str, str]], None] | None = None) -> str:
    """`dvc queue start -j N`, then wait until none of `names` (default: no experiment) is
    queued or running; the last `dvc queue status` text. Workers that exit with work left
    are started again (seen in CI, treeverse/dvc#10398). TimeoutError after `timeout` s."""
    start_queue(jobs, cwd, env)
    deadline = None if timeout is None else time.time() + timeout
    idle_since = None  # work queued and no worker alive, since (not just starting up)
    while True:
        text = dvc("queue", "status", cwd=cwd, env=env).stdout
        status = parse_queue_status(text)
        if names is not None:
            status = {n: status.get(n, "?") for n in names}
        if on_status is not None:
            on_status(status)
        states = set(status.values()) if names is not None else {s for s in QUEUE_STATES if s in text}
        if not states & {"Queued", "Running"}:
            return text
        if "Queued" in states and "Running" not in states and "0 active" in text:
            idle_since = idle_since or time.time()
            if time.time() - idle_since >= RESTART_AFTER_SECONDS:
                start_queue(jobs, cwd, env)
                idle_since = None
        else:
            idle_since = None
        if deadline is not None and time.time() > deadline:
            raise TimeoutError(f"the DVC queue is not done after {timeout} s:\n{text}")
        # Each `dvc queue status` costs a DVC start-up: poll gently, the runs need the cores.
        time.sleep(poll_seconds)
