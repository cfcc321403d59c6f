"""Stage start-up without Python's cyclic garbage collector.

Importing torch, transformers and PEFT creates hundreds of thousands of long-lived objects,
and while they load the collector walks all of them again at every full collection, plus
once more in the gc.collect() HF Trainer runs before training: a large share of the stage's
start (docs/results.md, start-up). The little cyclic garbage start-up leaves frees no
resident memory on the CPU when collected, so it is frozen with the rest.
"""

from __future__ import annotations

import gc


def pause_collector() -> None:
    """First thing in a stage's main(), before the heavy imports."""
    gc.disable()


def loaded() -> None:
    """Imports and model loaded: freeze what exists out of every later collection (so the
    collector only sees what training allocates) and turn it back on. Does nothing unless
    pause_collector() ran (train() called in a test process)."""
    if gc.isenabled():
        return
    import torch

    if torch.cuda.is_available():
        # Frozen garbage is never freed, and garbage from loading onto a GPU (Unsloth
        # quantizes as it loads) may hold device memory: collect it first.
        gc.collect()
    gc.freeze()
    gc.enable()
