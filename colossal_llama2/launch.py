"""Run a launcher so that Ctrl-C and SIGTERM stop training cleanly: ``python -m colossal_llama2.launch CMD...``.

    python -m colossal_llama2.launch colossalai run --nproc_per_node 8 --hostfile hostfile train.py ...
    python -m colossal_llama2.launch torchrun --nproc_per_node 8 train.py ...

Without it, a terminal's Ctrl-C or a scheduler's ``kill -- -PGID`` reaches ``colossalai run`` and torchrun
themselves. The workers still save and stop (training/lifecycle/signals.py), but the launchers report the signal:
``colossalai run`` prints ``Aborted!`` and exits 1, torchrun prints a SignalException traceback.

This wrapper starts the launcher in a session of its own, so those signals reach only the wrapper. On the
first SIGINT, SIGTERM or SIGHUP it sends SIGTERM to the training workers on this machine only (the children
of torchrun). They all-reduce the stop, so every rank on every node finishes the same step, saves one
checkpoint and exits 0; torchrun and ``colossalai run`` then end normally and the wrapper exits 0 (or with the
launcher's status). A second signal more than ``REPEAT_WINDOW_S`` after the first ends every process of the
run at once (SIGKILL; status 130, or 143): checkpoints are renamed into place only when complete, so the
newest complete one is unharmed. If the wrapper itself is killed, the launcher gets SIGTERM (Linux
parent-death signal) and stops the way it would without the wrapper.

A failed launch ends with one line, the first error a training process printed (``launch_output.py``); torchrun's
own traceback and failure table, and ``colossalai run``'s dump of every environment variable, are left out.
``colossalai run --hostfile F`` gets F read and checked first (comments, ``host slots=N``, hosts that do not
resolve or refuse ssh: ``hostfile.py``).
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time

import psutil

from colossal_llama2.hostfile import prepare_colossalai_run
from colossal_llama2.launch_output import LaunchOutput
from colossal_llama2.utils.errors import UserInputError

REPEAT_WINDOW_S = 2.0  # copies of one stop arriving by two paths (terminal + scheduler) count once
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
PR_SET_PDEATHSIG = 1


def _say(message: str) -> None:
    print(f"[colossal_llama2.launch] {message}", file=sys.stderr, flush=True)


def _show(lines: list[str]) -> None:
    """Pass lines on; a reader that went away (``| head``) must not stop the run: its output is then dropped."""
    try:
        sys.stdout.writelines(lines)
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):
        pass


def _die_with_parent() -> None:
    """In the launcher, before exec: SIGTERM when the wrapper dies (Linux only; elsewhere nothing)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def is_torchrun(cmdline: list[str]) -> bool:
    return any(os.path.basename(a) == "torchrun" or a in ("torch.distributed.run", "torch.distributed.launch")
               for a in cmdline[:3])


def local_workers(launcher: psutil.Process) -> list[psutil.Process]:
    """The training processes under ``launcher`` on this machine: the direct children of every torchrun
    (``launcher`` itself, or any process below it)."""
    workers = []
    try:
        candidates = [launcher, *launcher.children(recursive=True)]
    except psutil.Error:
        return []
    for p in candidates:
        try:
            if is_torchrun(p.cmdline()):
                workers.extend(p.children())
        except psutil.Error:
            continue
    return workers


def _signal_all(processes: list[psutil.Process], sig: int) -> int:
    sent = 0
    for p in processes:
        try:
            p.send_signal(sig)
            sent += 1
        except psutil.Error:
            pass
    return sent


class Guard:
    def __init__(self, command: list[str]):
        self.command = command
        self.first_stop_at: float | None = None
        self.first_signal = 0
        self.proc: subprocess.Popen | None = None

    def run(self) -> int:
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._handle)
        try:
            self.proc = subprocess.Popen(self.command, start_new_session=True, preexec_fn=_die_with_parent,
                                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                         errors="replace", bufsize=1)
        except FileNotFoundError:
            _say(f"error: command not found: {self.command[0]}")
            return 127
        output = LaunchOutput()
        for line in self.proc.stdout:  # signal handlers run meanwhile; reads resume after them (PEP 475)
            _show(output.feed(line))
        _show(output.flush())
        code = self.proc.wait()
        code = 128 - code if code < 0 else code
        if code and self.first_stop_at is None:
            _say(output.summary(code).removeprefix("[colossal_llama2.launch] "))
        return code

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        now = time.monotonic()
        if self.proc is None:
            raise SystemExit(128 + signum)
        if self.first_stop_at is None:
            self.first_stop_at, self.first_signal = now, signum
            self._stop_workers(name)
        elif now - self.first_stop_at > REPEAT_WINDOW_S:
            _say(f"{name} again: ending every process of the run now (the newest complete checkpoint is kept)")
            self._kill_everything()
            os._exit(128 + self.first_signal)

    def _stop_workers(self, name: str) -> None:
        launcher = psutil.Process(self.proc.pid)
        sent = _signal_all(local_workers(launcher), signal.SIGTERM)
        if sent:
            _say(f"{name} received: asked the {sent} training process(es) on this machine to finish the step, "
                 f"save a checkpoint and stop (all nodes stop at the same step). Again to end everything now.")
            return
        # Nothing is training yet (starting up): let the launcher handle the signal the way it would.
        _say(f"{name} received before training started: passing it on to the launcher")
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    def _kill_everything(self) -> None:
        try:
            launcher = psutil.Process(self.proc.pid)
            _signal_all([*launcher.children(recursive=True), launcher], signal.SIGKILL)
        except psutil.Error:
            pass


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    try:
        command, clean_hostfile = prepare_colossalai_run(argv)
    except UserInputError as err:
        _say(f"error: {err}")
        return err.exit_code
    try:
        return Guard(command).run()
    finally:
        if clean_hostfile:
            clean_hostfile.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
