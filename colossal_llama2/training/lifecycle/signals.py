"""Stopping a run the way people and schedulers do: finish the step, agree on it, save once, exit 0.

What reaches the workers (torchrun starts each worker in a session of its own, so a terminal's Ctrl-C or a
``kill -- -PGID`` of the launcher reaches only ``colossalai run`` and torchrun, and torchrun forwards the
signal to every worker):

* SIGINT, SIGTERM or SIGHUP on any worker sets a flag. Once per optimizer step the loop all-reduces it
  (``flag``, read a step later without stalling the GPU, then ``decide``), so every rank stops after the
  same step even if only one was signalled; the loop then saves one checkpoint and exits 0.
* The launcher going away also stops the run: ``LauncherWatch`` notices when the worker's parent (torchrun)
  or a ``colossalai run`` process above it has exited (e.g. SIGTERM to the launcher alone) and raises the
  same flag, so no worker trains on unobserved.
* A second signal more than ``REPEAT_WINDOW_S`` after the first leaves at once (status 130 for SIGINT, 143
  otherwise). Copies of one stop that arrive by two paths within that window (a scheduler signalling the
  workers and torchrun, which forwards the signal again) count as one. Checkpoints are renamed into place
  only when complete, so leaving mid-save never harms the newest complete one.
"""
from __future__ import annotations

import os
import signal
import threading
import time

import torch
import torch.distributed as dist

from ...utils.logging import get_logger

logger = get_logger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
REPEAT_WINDOW_S = 2.0


class GracefulStop:
    def __init__(self, device: torch.device):
        self.device = device
        self.signal_name: str | None = None
        self.first_signal_at: float | None = None
        self._previous = {}
        self.watch: LauncherWatch | None = None

    def install(self) -> "GracefulStop":
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        self.watch = LauncherWatch(self.request)
        self.watch.start()
        return self

    def request(self, reason: str) -> None:
        """Ask for a stop at the end of the current step (what a signal does; also called by LauncherWatch)."""
        if self.signal_name is None:
            self.signal_name = reason
            self.first_signal_at = time.monotonic()

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.first_signal_at is not None and time.monotonic() - self.first_signal_at > REPEAT_WINDOW_S:
            # The second stop request: the user means it. Leave now; a checkpoint being written stays a
            # temporary directory and the newest complete one is untouched.
            os.write(2, f"{name} again: leaving at once without saving\n".encode())
            os._exit(130 if signum == signal.SIGINT else 143)
        self.request(name)

    def flag(self) -> torch.Tensor:
        """This rank's stop flag, all-reduced (MAX) over ranks without waiting: read it with ``decide``."""
        flag = torch.full((1,), 1.0 if self.signal_name else 0.0, device=self.device)  # no host-to-device copy
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return flag

    def decide(self, flag_value: float) -> bool:
        """Whether to stop, from a value ``flag`` returned (every rank reads the same all-reduced value)."""
        if flag_value > 0 and self.signal_name is None:
            self.signal_name = "a stop on another rank"
        return flag_value > 0

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        if self.watch is not None:
            self.watch.stop()


class LauncherWatch(threading.Thread):
    """Calls ``on_gone(reason)`` once when the worker's parent or a ``colossalai run`` ancestor exits."""

    def __init__(self, on_gone, interval_s: float = 1.0):
        super().__init__(name="launcher-watch", daemon=True)
        import psutil

        from .launcher import ProcessRef, launcher_ancestors

        self.on_gone = on_gone
        self.interval_s = interval_s
        self.parent_pid = os.getppid()
        self.parent = ProcessRef.of(psutil.Process(self.parent_pid))
        self.ancestors = launcher_ancestors()
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.wait(self.interval_s):
            reason = self.check()
            if reason:
                logger.warning("%s: stopping after this step", reason)
                self.on_gone(reason)
                return

    def check(self) -> str | None:
        if os.getppid() != self.parent_pid:
            return f"the launcher (pid {self.parent_pid}) exited"
        gone = [p for p in self.ancestors if not p.alive()]
        return f"`colossalai run` (pid {gone[0].pid}) exited" if gone else None

    def stop(self) -> None:
        self._stopped.set()
