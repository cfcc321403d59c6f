"""The garbage collector paused while a stage starts (training/startup.py)."""

from __future__ import annotations

import subprocess
import sys


def test_stage_start_up_pauses_the_collector_then_freezes_what_loaded():
    # In a fresh interpreter: freezing the test process's objects would outlive this test.
    code = """
import gc, sys, weakref
from unittest import mock
from spelltune.training.startup import loaded, pause_collector

class Node: pass

def garbage_cycle():
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)

loaded()
assert gc.isenabled() and gc.get_freeze_count() == 0, "without a pause, loaded() must change nothing"
pause_collector()
assert not gc.isenabled()
import torch
cycle = garbage_cycle()
with mock.patch("torch.cuda.is_available", return_value=sys.argv[1] == "cuda"):
    loaded()
assert gc.isenabled() and gc.get_freeze_count() > 100_000, gc.get_freeze_count()
gc.collect()
# On a GPU the garbage is collected before freezing (it may hold device memory); on the CPU it is frozen.
assert (cycle() is None) == (sys.argv[1] == "cuda"), sys.argv[1]
"""
    for device in ("cpu", "cuda"):
        subprocess.run([sys.executable, "-c", code, device], check=True)
