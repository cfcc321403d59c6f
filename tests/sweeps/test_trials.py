"""What the runners share (sweeps/trials.py): the workers' share of the cores."""

from __future__ import annotations

from conftest import BASE
from spelltune.sweeps.schema import parse_sweep
from spelltune.sweeps.space import Space
from spelltune.sweeps.trials import thread_override


def test_workers_share_the_cores():
    import os

    sweep = parse_sweep({"method": "grid", "parameters": {"lora.r": {"values": [4]}}})
    cores = len(os.sched_getaffinity(0))
    zero = {**BASE, "train": {**BASE["train"], "threads": 0}}
    assert thread_override(sweep, Space(sweep, zero), 2) == {"train.threads": max(1, cores // 2)}
    assert thread_override(sweep, Space(sweep, zero), 1) == {}  # one worker: all cores, as params say
    assert thread_override(sweep, Space(sweep, zero, {"train.threads": 3}), 2) == {}  # the user's choice
    three = {**BASE, "train": {**BASE["train"], "threads": 3}}
    assert thread_override(sweep, Space(sweep, three), 2) == {}
