"""Training checkpoints on disk: checksummed, written atomically, kept to the last few
and the best, and found again on resume.

A checkpoint is a directory `checkpoint-<step>/` written by HF Trainer (adapter as
safetensors, optimizer, scheduler, RNG states, trainer_state.json with the step and so
the position in the data order), a copy of the DVCLive curves so far (`live/`), and our
`manifest.json`: the sha256 of every file, the fingerprint of the params that shape
training, and the run state HF does not keep (wall-clock so far, best metrics, W&B run
id). It is staged under a temporary name and renamed into place, so a kill mid-write
leaves no checkpoint at all.

While a run trains, its checkpoints live in the resume store,
`<repo>/.spelltune/resume/<params fingerprint>/`, outside DVC's outputs: `dvc exp run`
force-checks-out every output to its last committed state before it runs, which would
delete the checkpoints of a killed run. When training ends, the final and best
checkpoints are copied into `checkpoints/` (the train stage's DVC output, so each
experiment's are versioned in the DVC cache) and the run's resume store is removed.

A live run holds an `fcntl.flock` on its store (`claim_store`, released by the kernel when
the process ends, also on `kill -9`). Runs whose params differ only in keys outside the
fingerprint (log_every, save_every, keep_last, ...) share a fingerprint: a second live one
trains in its own store, `<fingerprint>.<n>/`, so that it never resumes from, rotates or
deletes the first one's checkpoints. Waiting would idle a queue worker for a whole run, and
failing would lose a run that is valid; a run that ends (finished or killed) releases its
store, and an identical later run resumes from it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
from itertools import count
from pathlib import Path

from spelltune import handoff

log = logging.getLogger("spelltune.training.checkpoints")

MANIFEST = "manifest.json"
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
STAGING_PREFIX = ".staging-"
_held: dict[Path, object] = {}  # store -> its open, locked lock file (held for the process's life)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def step_of(path: Path) -> int:
    match = CHECKPOINT.match(path.name)
    return int(match.group(1)) if match else -1


def checkpoints(root: Path) -> list[Path]:
    """Committed checkpoints under root, newest first."""
    found = [p for p in root.glob("checkpoint-*") if p.is_dir() and step_of(p) >= 0]
    return sorted(found, key=step_of, reverse=True)


def resume_store(repo_root: Path, fingerprint: str) -> Path:
    return repo_root / ".spelltune" / "resume" / fingerprint


def claim_store(repo_root: Path, fingerprint: str) -> Path:
    """This run's resume store, locked for the life of the process: `<fingerprint>/`, or
    `<fingerprint>.<n>/` (the lowest n free) while other live runs hold the ones before.
    The lock files live in `.spelltune/locks/` and are never removed, so that a store being
    deleted by its finished run can never be locked by two runs at once."""
    if os.environ.get(handoff.RESUME_STORE):  # a DDP process: its launcher holds the lock
        return Path(os.environ[handoff.RESUME_STORE])
    base = repo_root / ".spelltune" / "resume"
    locks = repo_root / ".spelltune" / "locks"  # beside resume/, which holds only stores
    locks.mkdir(parents=True, exist_ok=True)
    for n in count():
        name = fingerprint if n == 0 else f"{fingerprint}.{n}"
        store = base / name
        if store in _held:
            return store
        f = (locks / f"{name}.lock").open("a")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            if n == 0:
                log.warning("another live run trains these params (fingerprint %s) from %s; this run keeps its "
                            "own checkpoints apart", fingerprint, store)
            continue
        f.truncate(0)
        f.write(f"{os.getpid()}\n")
        f.flush()
        _held[store] = f
        return store
    raise AssertionError("unreachable")


def staging_dir(root: Path, step: int) -> Path:
    return root / f"{STAGING_PREFIX}checkpoint-{step}"


def commit(staging: Path, fingerprint: str, state: dict) -> Path:
    """Write the manifest into a fully written staging directory, then rename it to
    checkpoint-<step>: the rename is the moment the checkpoint starts to exist."""
    files = {str(p.relative_to(staging)): sha256(p) for p in sorted(staging.rglob("*")) if p.is_file()}
    manifest = {"fingerprint": fingerprint, "files": files, "state": state}
    with (staging / MANIFEST).open("w") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    final = staging.parent / staging.name.removeprefix(STAGING_PREFIX)
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)
    return final


def problem(path: Path) -> str | None:
    """Why this checkpoint cannot be loaded (missing manifest, missing or changed file), or None."""
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        return f"no readable {MANIFEST} ({type(exc).__name__})"
    # Valid JSON is not yet a manifest: one without its file list or fingerprint (written by
    # hand or by another version) is skipped like a corrupt checkpoint.
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not isinstance(manifest.get("fingerprint"), str) \
            or not isinstance(manifest.get("state"), dict):
        return f"{MANIFEST} is not a manifest (no files, fingerprint or state)"
    for name, digest in files.items():
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        if sha256(file) != digest:
            return f"{name} does not match its checksum"
    return None


def manifest(path: Path) -> dict:
    return json.loads((path / MANIFEST).read_text())


def resumable(root: Path, fingerprint: str) -> Path | None:
    """The newest intact checkpoint under root written with these params, or None.
    A corrupt checkpoint is skipped with a warning; one of other params is never used."""
    for path in checkpoints(root):
        why = problem(path)
        if why:
            log.warning("skipping %s: %s", path, why)
        elif manifest(path)["fingerprint"] == fingerprint:
            return path
    return None


def export(checkpoint: Path, dest_root: Path) -> Path:
    """Copy a checkpoint under dest_root (staged, then renamed into place)."""
    staging = staging_dir(dest_root, step_of(checkpoint))
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(checkpoint, staging)
    final = dest_root / checkpoint.name
    shutil.rmtree(final, ignore_errors=True)
    os.replace(staging, final)
    return final


def clear(root: Path) -> None:
    """Remove every checkpoint and staging directory (a fresh start)."""
    for path in root.glob("*checkpoint-*"):
        shutil.rmtree(path)


def rotate(root: Path, keep_last: int, best: Path | None) -> None:
    """Keep the newest `keep_last` checkpoints and the best one."""
    for path in checkpoints(root)[keep_last:]:
        if best is None or path.resolve() != best.resolve():
            shutil.rmtree(path)
