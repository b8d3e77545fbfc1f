"""What a worker needs to know of the processes that launched it, so that a stop ends all of them.

``colossalai run`` (0.5.0) runs torchrun through a child process (fabric/invoke) and waits on a pipe for
it. On Ctrl-C both of its processes get KeyboardInterrupt: the parent then waits forever to join the child,
and the child waits forever for an "exit" message the parent never sends. The workers finish and save, but
the user's terminal never comes back (measured: still hung after 90 s). Nothing in the workers can change
how the launcher handles its signal, so after a stop the first worker of each node leaves a small reaper
behind (``spawn_reaper``): a detached process that waits for torchrun to exit, gives the launcher
``LAUNCHER_GRACE_S`` to exit by itself and then ends whatever of it is still there, deepest process first.
It never touches a launcher that finished on its own, and it only runs after a stop, or when a run ends
by itself after its `colossalai run` was killed (the launcher's child would otherwise wait forever).

``protect_output_streams``: when the launcher is killed, the pipe the workers print into breaks, and the
next print or progress-bar update would raise BrokenPipeError in the middle of the step or the save
(measured: SIGTERM to the launcher's process group wrote no checkpoint and logged nothing). After it,
output that cannot be written is dropped instead.
"""
from __future__ import annotations

import argparse
import io
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass

LAUNCHER_GRACE_S = 5.0
REAPER_WAIT_S = 3600.0  # at most this long for torchrun to finish its shutdown


@dataclass(frozen=True)
class ProcessRef:
    """A process by pid and start time, so that a reused pid is never taken for it."""
    pid: int
    create_time: float

    def alive(self) -> bool:
        import psutil

        try:
            p = psutil.Process(self.pid)
            return p.create_time() == self.create_time and p.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    @classmethod
    def of(cls, process) -> "ProcessRef":
        return cls(process.pid, process.create_time())


def is_colossalai_run(cmdline: list[str]) -> bool:
    """``.../colossalai run ...`` (as a script, or ``python .../colossalai run ...``)."""
    for i, arg in enumerate(cmdline[:-1]):
        if os.path.basename(arg) == "colossalai" and cmdline[i + 1] == "run":
            return True
    return False


def launcher_ancestors() -> list[ProcessRef]:
    """The ``colossalai run`` processes above this one, nearest first (empty under plain torchrun)."""
    import psutil

    found = []
    try:
        for parent in psutil.Process().parents():
            try:
                if is_colossalai_run(parent.cmdline()):
                    found.append(ProcessRef.of(parent))
            except psutil.Error:
                continue
    except psutil.Error:
        pass
    return found


def spawn_reaper(torchrun: ProcessRef, launchers: list[ProcessRef]) -> None:
    """Leave a detached process that ends a stuck ``colossalai run`` once torchrun has exited."""
    args = [sys.executable, "-m", "colossal_llama2.training.lifecycle.launcher", "--torchrun", f"{torchrun.pid}:{torchrun.create_time}"]
    for p in launchers:
        args += ["--launcher", f"{p.pid}:{p.create_time}"]
    # Its own session and no inherited descriptors: it must not hold the launcher's output pipe open (the
    # launcher waits for that pipe to close) and must not receive a second Ctrl-C.
    subprocess.Popen(args, start_new_session=True, close_fds=True, stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def reap(torchrun: ProcessRef, launchers: list[ProcessRef], *, grace_s: float = LAUNCHER_GRACE_S,
         wait_s: float = REAPER_WAIT_S) -> list[int]:
    """Wait for torchrun to exit, then for the launchers; SIGTERM (then SIGKILL) what is still there.

    Returns the pids it had to signal."""
    import signal

    deadline = time.monotonic() + wait_s
    while torchrun.alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    signalled = []
    for p in launchers:  # nearest (the launcher's child) first: its parent is waiting to join it
        if _wait_gone(p, grace_s):
            continue
        signalled.append(p.pid)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.kill(p.pid, sig)
            except ProcessLookupError:
                break
            if _wait_gone(p, grace_s):
                break
    return signalled


def _wait_gone(p: ProcessRef, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while p.alive():
        if time.monotonic() > end:
            return False
        time.sleep(0.1)
    return True


class _TolerantStream(io.TextIOBase):
    """A text stream that drops what it cannot write (a broken pipe to a launcher that is gone)."""

    def __init__(self, stream):
        self.stream = stream
        self.broken = False

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                return self.stream.write(text)
            except (OSError, ValueError):
                self.broken = True
        return len(text)

    def flush(self) -> None:
        if not self.broken:
            try:
                self.stream.flush()
            except (OSError, ValueError):
                self.broken = True

    def isatty(self) -> bool:
        return not self.broken and self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self):
        return getattr(self.stream, "encoding", "utf-8")


def protect_output_streams() -> None:
    """sys.stdout/sys.stderr (and logging handlers writing to them) drop output they cannot write."""
    if isinstance(sys.stdout, _TolerantStream):
        return
    replacements = {id(sys.stdout): _TolerantStream(sys.stdout), id(sys.stderr): _TolerantStream(sys.stderr)}
    sys.stdout, sys.stderr = replacements[id(sys.stdout)], replacements[id(sys.stderr)]
    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in list(logging.root.manager.loggerDict))]
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            stream = getattr(handler, "stream", None)
            if stream is not None and id(stream) in replacements:
                handler.setStream(replacements[id(stream)])


def _parse_ref(text: str) -> ProcessRef:
    pid, created = text.split(":", 1)
    return ProcessRef(int(pid), float(created))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Reaper left behind by a stopped run (see module docstring).")
    p.add_argument("--torchrun", required=True, type=_parse_ref, help="pid:create_time of torchrun")
    p.add_argument("--launcher", action="append", default=[], type=_parse_ref,
                   help="pid:create_time of a `colossalai run` process, nearest first")
    args = p.parse_args(argv)
    reap(args.torchrun, args.launcher)
    return 0


if __name__ == "__main__":
    sys.exit(main())
