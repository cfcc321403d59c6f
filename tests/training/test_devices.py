"""Worker slots (training/devices.py): one GPU per worker, the cores shared, the workers of a
DVC queue counted. On the CPU, with real processes holding the slots."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from conftest import cpu_env

HOLD = textwrap.dedent("""
    import json, logging, sys
    from spelltune.training.devices import claim_worker
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    w = claim_worker(int(sys.argv[1]))
    print(json.dumps({**w.as_dict(), "env": __import__("os").environ.get("CUDA_VISIBLE_DEVICES")}), flush=True)
    sys.stdin.readline()  # hold the slot until told to go
""")


def hold(repo: Path, env: dict, threads: int = 0) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", HOLD, str(threads)], cwd=repo, env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def claimed(proc: subprocess.Popen) -> dict:
    return json.loads(proc.stdout.readline())


def release(proc: subprocess.Popen) -> None:
    proc.stdin.write("\n")
    proc.stdin.flush()
    proc.wait(timeout=30)


def test_two_cpu_workers_get_different_slots_and_share_the_cores(tmp_path):
    env = cpu_env(SPELLTUNE_WORKERS="2")
    a = hold(tmp_path, env)
    first = claimed(a)
    b = hold(tmp_path, env)
    second = claimed(b)
    cores = len(os.sched_getaffinity(0))
    assert (first["slot"], second["slot"]) == (0, 1)
    assert first["gpu"] is None and first["env"] == ""
    assert first["threads"] == second["threads"] == max(1, cores // 2)
    assert first["workers"] == 2 and first["workers_from"] == "SPELLTUNE_WORKERS"
    release(a)
    c = hold(tmp_path, env, threads=3)  # the freed slot is reused; train.threads set: left alone
    third = claimed(c)
    assert third["slot"] == 0 and third["threads"] == 3
    release(b), release(c)
    assert (tmp_path / ".spelltune/.gitignore").read_text() == "*\n"


def test_one_gpu_per_worker_from_the_visible_list(tmp_path):
    """CUDA_VISIBLE_DEVICES="3,5" (as the user set it): worker 0 gets 3, worker 1 gets 5, and
    a third waits until one of them is free instead of sharing."""
    env = cpu_env(CUDA_VISIBLE_DEVICES="3,5", SPELLTUNE_WORKERS="2")
    a, b = hold(tmp_path, env), None
    first = claimed(a)
    b = hold(tmp_path, env)
    second = claimed(b)
    assert (first["slot"], first["gpu"], first["env"]) == (0, "3", "3")
    assert (second["slot"], second["gpu"], second["env"]) == (1, "5", "5")
    c = hold(tmp_path, env)
    time.sleep(2.5)
    assert c.poll() is None
    os.set_blocking(c.stdout.fileno(), False)
    assert not c.stdout.readline(), "a third worker must not share a GPU"
    os.set_blocking(c.stdout.fileno(), True)
    release(a)
    third = claimed(c)
    assert (third["slot"], third["gpu"]) == (0, "3")
    release(b), release(c)
    assert "waiting for one to free up" in c.stderr.read()


def test_queued_run_counts_the_workers_of_its_dvc_queue(tmp_path):
    """A stage descends from `dvc exp queue-worker dvc-exp-<hash>-<n>@localhost`; the
    workers of the same queue share the hash. Fake that process tree."""
    worker = tmp_path / "worker.py"
    worker.write_text(textwrap.dedent("""
        import subprocess, sys, time
        if sys.argv[-1] == "stage":
            code = "from spelltune.training.devices import worker_count; print(*worker_count(), sep=',')"
            subprocess.run([sys.executable, "-c", code], check=True)
        else:
            time.sleep(60)
    """))
    env = cpu_env()
    others = [subprocess.Popen([sys.executable, str(worker), "exp", "queue-worker", node])
              for node in ("dvc-exp-abc123-2@localhost", "dvc-exp-abc123-3@localhost", "dvc-exp-ffffff-1@localhost")]
    try:
        time.sleep(0.5)
        out = subprocess.run(
            [sys.executable, str(worker), "exp", "queue-worker", "dvc-exp-abc123-1@localhost", "stage"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert out.strip() == "3,dvc queue workers"
        out = subprocess.run(
            [sys.executable, str(worker), "exp", "queue-worker", "dvc-exp-abc123-1@localhost", "stage"],
            env={**env, "SPELLTUNE_WORKERS": "2"},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert out.strip() == "2,SPELLTUNE_WORKERS"
    finally:
        for p in others:
            p.kill()
            p.wait()
    from spelltune.training.devices import dvc_queue_workers

    assert dvc_queue_workers() is None  # pytest runs in no queue
