"""What a stage or a use command reads, checked against the md5 DVC recorded for it.

DVC trusts its state database (inode, mtime, size): a cache object changed in place with
its mtime kept (a bad disk, a stray write through a hardlink) leaves `dvc status` clean,
and a hardlinked workspace file *is* that object. So the inputs that matter are hashed
again, with DVC's own hash (md5 of the content; a directory's files listed in its `.dir`
object), before they are trained on, scored with, served or exported.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml

CACHE = Path(".dvc/cache/files/md5")
# What the stages read that an earlier stage wrote: the validate stage checks them first.
STAGE_INPUTS = ("data/train.jsonl", "data/validation.jsonl", "data/test.jsonl", "data/vocabulary.jsonl",
                "data/base_model", "checkpoints")


class IntegrityError(ValueError):
    """A file whose content is not what DVC recorded, phrased as the line the user sees."""


def md5(path: Path) -> str:
    digest = hashlib.md5()  # noqa: S324 - DVC's content hash, not a security check
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def recorded_outs(lock_text: str | None) -> dict[str, tuple[str, str]]:
    """dvc.lock's outputs: path -> (stage, md5)."""
    stages = (yaml.safe_load(lock_text or "") or {}).get("stages") or {}
    return {out["path"]: (name, out["md5"]) for name, stage in stages.items()
            for out in stage.get("outs") or [] if out.get("md5")}


def listing(md5_value: str, repo: Path) -> dict[str, str] | None:
    """The files of a directory output (relpath -> md5) from its `.dir` object; None where
    the cache lacks it (nothing to check against)."""
    digest = md5_value.removesuffix(".dir")
    path = repo / CACHE / digest[:2] / f"{digest[2:]}.dir"
    try:
        return {entry["relpath"]: entry["md5"] for entry in json.loads(path.read_text())}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def expected(out: str, md5_value: str, repo: Path) -> dict[str, str]:
    """The files `out` must hold (path relative to the repository -> md5)."""
    if not md5_value.endswith(".dir"):
        return {out: md5_value}
    return {f"{out}/{rel}": value for rel, value in (listing(md5_value, repo) or {}).items()}


def cache_object(md5_value: str) -> Path:
    return CACHE / md5_value[:2] / md5_value[2:]


def check(files: dict[str, str], root: Path, where: str, remedy) -> None:
    """Each file under `root` has its md5, or IntegrityError names the first that does not;
    remedy(path, md5) does what can be done and says what to do next."""
    for rel, value in files.items():
        path = root / rel
        if path.is_file() and md5(path) != value:
            raise IntegrityError(f"{where}{rel}: its content does not match the md5 DVC recorded ({value[:8]}…): "
                                 f"a corrupt DVC cache object; {remedy(path, value)}")


QUARANTINE = Path(".spelltune/corrupt")


def set_aside(path: Path, value: str, repo: Path, stage: str) -> str:
    """The corrupt object out of the cache (kept in QUARANTINE) and its workspace copy removed,
    so that the next run makes the output again instead of linking it back."""
    (repo / QUARANTINE).mkdir(parents=True, exist_ok=True)
    obj = repo / cache_object(value)
    kept = repo / QUARANTINE / value
    if obj.exists():
        obj.replace(kept)
    else:
        path.replace(kept)
    path.unlink(missing_ok=True)
    return f"set aside as {QUARANTINE / value}: run again, and stage {stage} makes it anew"


def verify_inputs(paths: tuple[str, ...], repo: Path = Path(".")) -> None:
    """The workspace's `paths` (outputs of earlier stages) against dvc.lock."""
    lock = repo / "dvc.lock"
    outs = recorded_outs(lock.read_text() if lock.is_file() else None)
    for path in paths:
        if path in outs:
            stage, value = outs[path]
            check(expected(path, value, repo), repo, "",
                  lambda bad_path, bad, stage=stage: set_aside(bad_path, bad, repo, stage))


def verify_or_exit(paths: tuple[str, ...]) -> None:
    """verify_inputs inside a `dvc` run; a mismatch is one line and exit 2, before anything is read."""
    from spelltune.errors import fail
    from spelltune.workspace import run_by_dvc

    if run_by_dvc():
        try:
            verify_inputs(paths)
        except IntegrityError as exc:
            fail(exc)
