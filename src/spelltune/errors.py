"""The one way a command stops on a user's mistake: one line on stderr, exit status 2."""

from __future__ import annotations

import sys
from typing import NoReturn


def error(message: str) -> int:
    """Print `error: message` to stderr; the exit status to return (2)."""
    print(f"error: {message}", file=sys.stderr)
    return 2


def fail(message: str) -> NoReturn:
    """Print `error: message` to stderr and exit with status 2."""
    raise SystemExit(error(message))
