"""The training process's life around the loop: Python's garbage collector on a schedule, and the exit."""
from __future__ import annotations

import contextlib
import gc
import os

import torch.distributed as dist


class GarbageCollection:
    """Python's garbage collector on a schedule instead of whenever allocations cross a threshold.

    The training step is host-bound: an automatic full collection in the middle of a
    step (tens of ms with transformers, colossalai and datasets loaded) stalls the GPU. With ``interval`` > 0
    what exists at the start is frozen out of future collections and a young-generation collection runs
    every ``interval`` optimizer steps, at a step boundary. 0 keeps Python's default behaviour.
    """

    def __init__(self, interval: int):
        self.interval = interval
        self.was_enabled = gc.isenabled()
        if interval > 0:
            gc.collect()
            gc.freeze()
            gc.disable()

    def after_step(self, step: int) -> None:
        if self.interval > 0 and step % self.interval == 0:
            gc.collect(1)

    def restore(self) -> None:
        if self.interval > 0:
            gc.unfreeze()
            if self.was_enabled:
                gc.enable()


def leave_process(code: int) -> None:
    """End a finished run: wait for every rank, flush, and exit without tearing DDP down.

    Seen with torch 2.13 + gloo: when a rank's DDP Reducer is freed after its peer has exited,
    ProcessGroupGloo's destructor waits forever for queued work (finished runs that never exit). Every
    file is already closed or atomically renamed at this point, so nothing is lost by skipping teardown.
    """
    import logging
    import sys

    with contextlib.suppress(Exception):
        dist.barrier()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
