"""What the comparison and use commands share: an OSError as one line, Markdown to a file or stdout."""

from __future__ import annotations

import sys
from pathlib import Path


def os_error(exc: OSError) -> str:
    """An OSError as one line: the path and what went wrong there."""
    where = exc.filename or ""
    return f"{where}: {exc.strerror or exc}" if where else str(exc.strerror or exc)


def emit(text: str, out: str | None) -> int:
    """Markdown to --out, or to stdout."""
    if out:
        Path(out).write_text(text)
        print(f"wrote {out}", file=sys.stderr)
    else:
        print(text)
    return 0
