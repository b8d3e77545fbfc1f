"""Graceful stop on SIGTERM/SIGINT: finish the step, save a checkpoint, exit 0 (preemptible clusters).

The handler only sets a flag; the loop asks ``should_stop()`` once per optimizer step, which all-reduces
the flag so every rank stops after the same step even if only one of them was signalled.
"""
from __future__ import annotations

import signal

import torch
import torch.distributed as dist


class GracefulStop:
    def __init__(self, device: torch.device):
        self.device = device
        self.signal_name: str | None = None
        self._previous = {}

    def install(self) -> "GracefulStop":
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self.signal_name = signal.Signals(signum).name

    def should_stop(self) -> bool:
        flag = torch.tensor([1.0 if self.signal_name else 0.0], device=self.device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item() > 0 and self.signal_name is None:
            self.signal_name = "signal on another rank"
        return flag.item() > 0

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
