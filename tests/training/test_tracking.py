"""The metric contract's clock (training/tracking.py)."""

from __future__ import annotations


def test_process_age_is_not_ahead_of_the_clock():
    """seconds_since_process_start of a fresh process is within the time its parent saw it
    run (psutil's create_time, rounded by the boot time, could be up to 1 s ahead)."""
    import subprocess
    import sys
    import time

    started = time.monotonic()
    printed = subprocess.run(
        [sys.executable, "-c", "from spelltune.training.tracking import seconds_since_process_start as a; print(a())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    wall = time.monotonic() - started
    assert 0 <= float(printed) <= wall
