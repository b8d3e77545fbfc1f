"""Per-step metrics without stalling the GPU.

Reading a CUDA value on the host (``.item()``, ``float(tensor)``) waits for *every* kernel queued before it,
so a loop that reads the loss at the end of each step drains the GPU's queue once per step: the next step's
first kernels are issued to an idle GPU, and the forward pass (many small kernels issued from Python) then
runs at the host's pace. Profiled on one H100 (docs/benchmarks.md), the GPU was busy 88 ms of a 105 ms ddp step.

``DeviceScalars`` instead copies a step's scalars to pinned host memory asynchronously and records an event;
the loop reads them one step later, after it has queued the next step, when the GPU is long past them.
Whatever needs the values at once (a checkpoint, an evaluation, the end) reads them first.
"""
from __future__ import annotations

import torch


class DeviceScalars:
    """Scalars (0-d tensors on any device, or plain numbers/None) captured now, read later."""

    def __init__(self, values: dict[str, torch.Tensor | float | int | None]):
        # host tensors cost nothing to read: only CUDA ones take the asynchronous path
        self.plain = {k: (float(v) if isinstance(v, torch.Tensor) else v) for k, v in values.items()
                      if not (isinstance(v, torch.Tensor) and v.is_cuda)}
        self.keys = [k for k, v in values.items() if isinstance(v, torch.Tensor) and v.is_cuda]
        self.event = None
        self.host = None
        if not self.keys:
            return
        stacked = torch.stack([values[k].detach().reshape(()).to(torch.float64) for k in self.keys])
        self.host = torch.empty(stacked.shape, dtype=torch.float64, pin_memory=True)
        self.host.copy_(stacked, non_blocking=True)
        self.event = torch.cuda.Event()
        self.event.record()

    def read(self) -> dict[str, float | int | None]:
        """The values as Python numbers; waits only for the work queued before this object was made."""
        if self.event is not None:
            self.event.synchronize()
        out = dict(self.plain)
        if self.host is not None:
            out.update(zip(self.keys, self.host.tolist()))
        return out
