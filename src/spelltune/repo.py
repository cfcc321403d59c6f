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


class QueueKeeper:
    """Starts the DVC queue's workers again where work has waited with none alive for
    RESTART_AFTER_SECONDS: a started worker may exit before it takes its first task (seen
    in CI, treeverse/dvc#10398)."""

    def __init__(self, jobs: int, cwd: Path | None = None, env: dict | None = None):
        self.jobs, self.cwd, self.env = jobs, cwd, env
        self.idle_since: float | None = None

    def start(self) -> None:
        start_queue(self.jobs, self.cwd, self.env)
        self.idle_since = None

    def check(self, status_text: str) -> None:
        """Called with each `dvc queue status` text."""
        states = {s for s in QUEUE_STATES if s in status_text}
        if "Queued" in states and "Running" not in states and "0 active" in status_text:
            self.idle_since = self.idle_since or time.time()
            if time.time() - self.idle_since >= RESTART_AFTER_SECONDS:
                self.start()
        else:
            self.idle_since = None


def run_queue(jobs: int, names: list[str] | None = None, poll_seconds: float = 10, timeout: float | None = None,
              cwd: Path | None = None, env: dict | None = None,
              on_status: Callable[[dict[str, str]], None] | None = None) -> str:
    """`dvc queue start -j N`, then wait until none of `names` (default: no experiment) is
    queued or running, starting idle workers again (QueueKeeper); the last `dvc queue
    status` text. TimeoutError after `timeout` s."""
    keeper = QueueKeeper(jobs, cwd, env)
    keeper.start()
    deadline = None if timeout is None else time.time() + timeout
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
        keeper.check(text)
        if deadline is not None and time.time() > deadline:
            raise TimeoutError(f"the DVC queue is not done after {timeout} s:\n{text}")
        # Each `dvc queue status` costs a DVC start-up: poll gently, the runs need the cores.
        time.sleep(poll_seconds)
