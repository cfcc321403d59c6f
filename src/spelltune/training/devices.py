"""Worker slots: concurrent runs on one machine share its cores and never share a GPU.

`dvc queue start -j N` starts N workers that each run whole experiments; nothing in DVC
tells a stage which worker it runs in or which GPU to use. So every train and evaluate
stage claims the lowest free *slot* i: an `fcntl.flock` on
`<repo>/.spelltune/slots/slot-<i>.lock`, held until the process exits (the kernel drops
it when the process dies, also on `kill -9`). `<repo>` is the repository the user ran
from, also for a queued run in its temporary copy under `.dvc/tmp/exps/`.

- GPUs: slot i gets the i-th visible GPU (`CUDA_VISIBLE_DEVICES` as the user set it, else
  every GPU `nvidia-smi -L` lists), set as `CUDA_VISIBLE_DEVICES` before torch
  initialises CUDA. There are as many slots as GPUs; a run that finds them all taken
  waits for one, so two runs never share a GPU.
- CPU threads, when `train.threads` is 0: cores // workers. The worker count is
  `SPELLTUNE_WORKERS` when set; else, inside a DVC queue worker, the number of live
  `dvc exp queue-worker` processes of the same queue (found from the process table:
  this process descends from its worker); else 1.

This module must stay light (no torch): it runs before torch touches CUDA.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from spelltune import handoff

log = logging.getLogger("spelltune.training.devices")

MAX_CPU_SLOTS = 256
WAIT_SECONDS = 1.0  # poll for a free GPU slot
# `dvc exp queue-worker dvc-exp-<hash of the queue's directory>-<n>@localhost`
QUEUE_WORKER = "queue-worker"
NODE_NAME = re.compile(r"^(dvc-exp-[0-9a-f]+-)(\d+)@")
# A queued or --temp DVC experiment runs in <repo>/.dvc/tmp/exps/<tmp>/, deleted afterwards.
EXP_TEMP_DIR = re.compile(r"^(.*?)/\.dvc/tmp/exps/")


@dataclass(frozen=True)
class Worker:
    slot: int
    gpu: str | None  # the CUDA_VISIBLE_DEVICES entry this run got; None on the CPU
    threads: int  # torch intra-op threads
    workers: int  # concurrent workers the cores are shared between
    workers_from: str  # where that count came from

    def as_dict(self) -> dict:
        return asdict(self)


_claimed: tuple[Worker, object] | None = None  # (worker, the open lock file) for this process


def original_repo_root(cwd: Path | None = None) -> Path:
    """The repository the user ran from, also when DVC runs us in a temporary copy."""
    cwd = (cwd or Path.cwd()).resolve()
    match = EXP_TEMP_DIR.match(cwd.as_posix() + "/")
    return Path(match.group(1)) if match else cwd


def cores() -> int:
    return len(os.sched_getaffinity(0))


def visible_gpus(env: dict | None = None) -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries (indices or UUIDs)."""
    env = os.environ if env is None else env
    listed = env.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        # CUDA stops at the first invalid entry; "" or "-1" hide every GPU.
        entries = []
        for entry in (e.strip() for e in listed.split(",")):
            if not entry or entry.startswith("-"):
                break
            entries.append(entry)
        return entries
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(line for line in out.splitlines() if line.startswith("GPU "))]


def _queue_worker_node(cmdline: list[str]) -> re.Match | None:
    if QUEUE_WORKER in cmdline:
        i = cmdline.index(QUEUE_WORKER)
        if i + 1 < len(cmdline):
            return NODE_NAME.match(cmdline[i + 1])
    return None


def dvc_queue_workers() -> int | None:
    """The number of live workers of the DVC queue this process runs in (None: not in one).

    The stage descends from its worker (`dvc exp queue-worker <node>` → `dvc exp exec-run`
    → the stage command); the queue's other workers have node names with the same
    `dvc-exp-<hash>-` prefix (DVC's LocalCeleryQueue._spawn_worker)."""
    import psutil

    try:
        ancestry = psutil.Process().parents()
        node = next((m for p in ancestry if (m := _queue_worker_node(p.cmdline()))), None)
    except psutil.Error:
        return None
    if node is None:
        return None
    count = 0
    for proc in psutil.process_iter(["cmdline"]):
        m = _queue_worker_node(proc.info["cmdline"] or [])
        count += bool(m and m.group(1) == node.group(1))
    return max(count, 1)


def worker_count() -> tuple[int, str]:
    value = os.environ.get(handoff.WORKERS)
    if value:
        try:
            n = int(value)
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(f"{handoff.WORKERS} = {value!r}: must be a whole number >= 1 (concurrent workers)")
        return n, handoff.WORKERS
    n = dvc_queue_workers()
    if n is not None:
        return n, "dvc queue workers"
    return 1, "single run"


def slots_dir(repo_root: Path) -> Path:
    root = repo_root / ".spelltune"
    (root / "slots").mkdir(parents=True, exist_ok=True)
    ignore = root / ".gitignore"  # .spelltune/ ignores itself in git
    if not ignore.exists():
        ignore.write_text("*\n")
    return root / "slots"


def _try_lock(path: Path):
    f = path.open("a")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    f.truncate(0)
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


def claim_slot(directory: Path, n_slots: int) -> tuple[int, object]:
    """The lowest free slot below n_slots, locked; waits while all are taken."""
    waited = False
    while True:
        for i in range(n_slots):
            f = _try_lock(directory / f"slot-{i}.lock")
            if f is not None:
                return i, f
        if not waited:
            log.info("all %d GPU slots in %s are taken; waiting for one to free up", n_slots, directory)
            waited = True
        time.sleep(WAIT_SECONDS)


def claim_worker(threads: int = 0, repo_root: Path | None = None) -> Worker:
    """Claim this process's slot (once per process), pin its GPU, and choose its threads.

    `threads` is train.threads: 0 shares the cores between the workers."""
    global _claimed
    if _claimed is not None:
        return _claimed[0]
    if int(os.environ.get("LOCAL_WORLD_SIZE", "1")) > 1:
        return _claim_torchrun_process(threads)
    gpus = visible_gpus()
    directory = slots_dir(repo_root or original_repo_root())
    slot, lock = claim_slot(directory, len(gpus) if gpus else MAX_CPU_SLOTS)
    gpu = None
    if gpus:
        gpu = gpus[slot]
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    n_workers, source = worker_count()
    chosen = threads or max(1, cores() // n_workers)
    worker = Worker(slot=slot, gpu=gpu, threads=chosen, workers=n_workers, workers_from=source)
    _claimed = (worker, lock)
    where = f"GPU {gpu} (CUDA_VISIBLE_DEVICES={gpu})" if gpu is not None else "CPU"
    how = "train.threads" if threads else f"{cores()} cores // {n_workers} workers ({source})"
    log.info("worker slot %d: %s; %d torch threads (%s)", slot, where, chosen, how)
    return worker


def _claim_torchrun_process(threads: int) -> Worker:
    """A process of a DDP run under torchrun: the run as a whole is one experiment, so no
    slot is locked; local rank i uses GPU i (accelerate picks it), or a share of the cores."""
    global _claimed
    n, rank = int(os.environ["LOCAL_WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0"))
    gpus = visible_gpus()
    chosen = threads or max(1, cores() // n)
    worker = Worker(
        slot=rank, gpu=gpus[rank] if rank < len(gpus) else None, threads=chosen, workers=n, workers_from="torchrun"
    )
    _claimed = (worker, None)
    log.info(
        "DDP process %d of %d: %s; %d torch threads", rank, n, f"GPU {worker.gpu}" if worker.gpu else "CPU", chosen
    )
    return worker


def _demo() -> None:  # python -m spelltune.training.devices: what a stage started here would get
    import json

    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    start = time.perf_counter()
    worker = claim_worker()
    print(json.dumps({**worker.as_dict(), "seconds": round(time.perf_counter() - start, 4)}))


if __name__ == "__main__":
    _demo()
