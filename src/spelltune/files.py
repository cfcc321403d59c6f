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


REBUILD = "rebuild it with `dvc repro prepare`"
# The question files prepare hands to train and evaluate (data/<name>): the keys every item
# needs, and whether the file may hold none (the vocabulary sample is 0 items when
# data.vocabulary_sample is 0). A letter_position item also needs its 1-based position.
QUESTION_KEYS = ("question", "answer", "word", "task")
QUESTION_FILES = {"train.jsonl": False, "validation.jsonl": False, "test.jsonl": False, "vocabulary.jsonl": True}


def read_jsonl(path: str | Path) -> list[dict]:
    """One JSON object per non-blank line; a bad line raises DataFileError naming file:line.
    A question file of data/ (QUESTION_FILES) is also checked for its keys and for items."""
    items = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataFileError(f"{path}: not found; build it with `dvc repro prepare`") from None
    except IsADirectoryError:
        raise DataFileError(f"{path}: a directory, not a file; remove it and {REBUILD}") from None
    except UnicodeDecodeError as exc:
        raise DataFileError(f"{path}: not text (byte {exc.start} is not UTF-8); {REBUILD}") from None
    except OSError as exc:
        raise DataFileError(f"{path}: cannot be read ({exc.strerror})") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataFileError(f"{path}:{number}: not valid JSON ({exc.msg} at column {exc.colno}); "
                                f"{REBUILD}") from None
        if not isinstance(item, dict):
            raise DataFileError(f"{path}:{number}: expected a JSON object, got {type(item).__name__}")
        if _is_question_file(path):
            _check_question(item, f"{path}:{number}")
        items.append(item)
    if not items and _is_question_file(path) and not QUESTION_FILES[Path(path).name]:
        raise DataFileError(f"{path}: no items ({'only blank lines' if lines else 'an empty file'}); {REBUILD}")
    return items


def _is_question_file(path: str | Path) -> bool:
    path = Path(path)
    return path.name in QUESTION_FILES and path.parent.name == "data"


def _check_question(item: dict, where: str) -> None:
    """An item train and evaluate can read: its keys, strings where they take strings."""
    gone = [key for key in QUESTION_KEYS if key not in item]
    if gone:
        has = f"the line has {', '.join(map(str, item))}" if item else "an empty object"
        raise DataFileError(f"{where}: missing key{'s' * (len(gone) > 1)} {', '.join(gone)} ({has}); {REBUILD}")
    for key in QUESTION_KEYS:
        if not isinstance(item[key], str):
            raise DataFileError(f"{where}: {key} = {item[key]!r}: expected a string; {REBUILD}")
    position = item.get("position")
    if item["task"] == "letter_position" and (not isinstance(position, int) or isinstance(position, bool)
                                              or not 1 <= position <= len(item["word"])):
        raise DataFileError(f"{where}: position = {position!r}: a letter_position item needs the 1-based position "
                            f"of a letter of {item['word']!r}; {REBUILD}")
