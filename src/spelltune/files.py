"""Reading and writing the JSON and JSON Lines files stages hand to each other."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path


def _write_atomically(path: Path, text: str) -> None:
    """Temporary name, then rename: a killed run never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def write_jsonl(items: list[dict], path: Path) -> None:
    _write_atomically(path, "".join(json.dumps(item) + "\n" for item in items))


def write_json(data: dict, path: Path) -> None:
    _write_atomically(path, json.dumps(data, indent=2) + "\n")


# A write the disk refused: full, over a quota, over a file-size limit.
DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def disk_full(exc: BaseException, where: Path = Path(".")) -> str | None:
    """What to say when `exc`, or an error that caused it, is a write the disk refused; None
    otherwise. Libraries wrap it (sqlite's "disk I/O error", torch's "failed writing"), so a
    disk with under 1 MiB left counts too, whatever the exception says."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in DISK_FULL_ERRNOS:
            return f"{seen.filename or where.resolve()}: {seen.strerror}"
        seen = seen.__cause__ or seen.__context__
    free = shutil.disk_usage(where).free
    if free < 1 << 20:
        return f"{where.resolve()}: the disk is full ({free:,} bytes free; {type(exc).__name__}: {str(exc)[:120]})"
    return None


class DataFileError(ValueError):
    """A data file that does not parse, phrased as `file:line: what`."""


def read_jsonl(path: str | Path) -> list[dict]:
    """One JSON object per non-blank line; a bad line raises DataFileError naming file:line."""
    items = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataFileError(f"{path}: not found; build it with `dvc repro prepare`") from None
    except UnicodeDecodeError as exc:
        raise DataFileError(f"{path}: not text (byte {exc.start} is not UTF-8); rebuild it with `dvc repro prepare`"
                            ) from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataFileError(f"{path}:{number}: not valid JSON ({exc.msg} at column {exc.colno}); "
                                "rebuild it with `dvc repro prepare`") from None
        if not isinstance(item, dict):
            raise DataFileError(f"{path}:{number}: expected a JSON object, got {type(item).__name__}")
        items.append(item)
    return items
