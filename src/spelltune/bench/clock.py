"""The benchmarks' stopwatch: wall time and tokens seen at chosen optimizer steps."""

from __future__ import annotations

import time
from collections.abc import Callable


def step_clock(steps: tuple[int, ...], synchronize: Callable[[], None] | None = None):
    """A TrainerCallback whose `marks[step]` is (seconds, tokens seen) when each of `steps`
    ends (and at step 0 when training begins). synchronize: waits for the GPU first."""
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def __init__(self):
            self.marks: dict[int, tuple[float, int]] = {}

        def on_train_begin(self, args, state, control, **kwargs):
            self.marks[0] = (time.perf_counter(), 0)

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step in steps:
                if synchronize is not None:
                    synchronize()
                self.marks[state.global_step] = (time.perf_counter(), state.num_input_tokens_seen)

        def between(self, first: int, last: int) -> tuple[float, int]:
            """(seconds, tokens) from the end of step `first` to the end of step `last`."""
            (t0, tok0), (t1, tok1) = self.marks[first], self.marks[last]
            return t1 - t0, tok1 - tok0

    return StepClock()
