"""Graceful stop on SIGTERM/SIGINT: finish the step, save a checkpoint, exit 0 (preemptible clusters).

The handler only sets a flag; once per optimizer step the loop all-reduces it (``flag``, read a step later
without stalling the GPU, then ``decide``) so every rank stops after the same step even if only one of them
was signalled.
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

    def flag(self) -> torch.Tensor:
        """This rank's stop flag, all-reduced (MAX) over ranks without waiting: read it with ``decide``."""
        flag = torch.full((1,), 1.0 if self.signal_name else 0.0, device=self.device)  # no host-to-device copy
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return flag

    def decide(self, flag_value: float) -> bool:
        """Whether to stop, from a value ``flag`` returned (every rank reads the same all-reduced value)."""
        if flag_value > 0 and self.signal_name is None:
            self.signal_name = "signal on another rank"
        return flag_value > 0

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
