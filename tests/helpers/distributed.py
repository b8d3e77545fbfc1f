"""Run a real entry point on several CPU ranks (gloo) and hand back its output.

Used by every multi-process test: it launches ``torchrun`` or ``colossalai run`` with a free port and a
timeout, with the repository on PYTHONPATH and the hub switched off, and fails the test with the tail of
the output when the run fails or hangs.
"""
from __future__ import annotations

import fcntl
import itertools
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from colossal_llama2.utils.launch_env import colossalai_run_env

REPO_ROOT = Path(__file__).resolve().parents[2]


_PORT_COUNTER = itertools.count()
PORT_RANGE = range(20000, 30000)  # below the ephemeral range, where the OS hands out ports of its own
CLAIMS = Path(tempfile.gettempdir()) / "colossal_llama2-test-ports"


def free_port() -> int:
    """A port for a run's rendezvous that no other test process on this machine is handed while this one lives.

    Asking the OS for a free port (bind to 0, close, hand over) races: another process can be handed the same
    port before the run binds it. Here a port is claimed machine-wide by an exclusive ``flock`` on
    ``CLAIMS/<port>``, held while this process lives, so two suites on one machine (two pytest-xdist workers, or
    a developer's selection beside CI) never share one. The kernel drops the lock when its holder dies, so a dead
    process's ports are free again with no stale-file takeover to race on. Ports something else holds are
    skipped.
    """
    CLAIMS.mkdir(exist_ok=True)
    start = random.Random(os.getpid()).randrange(len(PORT_RANGE))
    for _ in range(len(PORT_RANGE)):
        port = PORT_RANGE[(start + next(_PORT_COUNTER)) % len(PORT_RANGE)]
        if not _claim(CLAIMS / str(port)):
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free port in {PORT_RANGE.start}..{PORT_RANGE.stop - 1}")


_HELD_CLAIMS: list[int] = []  # open claim files: each lock lasts as long as its descriptor


def _claim(path: Path) -> bool:
    """Lock ``path`` for the rest of this process's life; False if another open of it holds the lock."""
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    _HELD_CLAIMS.append(fd)
    return True


def test_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = colossalai_run_env()  # e.g. `make test X=...` exports a MAKEOVERRIDES that `colossalai run` cannot quote
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    if extra:
        env.update(extra)
    return env


def run_distributed(script: str | os.PathLike, args: list[str] | tuple[str, ...] = (), *, nproc: int = 2,
                    launcher: str = "torchrun", timeout: float = 600, env: dict[str, str] | None = None,
                    check: bool = True, cwd: str | os.PathLike | None = None) -> subprocess.CompletedProcess:
    """Run ``script args`` on ``nproc`` local ranks; return the CompletedProcess (stdout+stderr merged).

    ``launcher``: "torchrun" or "colossalai" (``colossalai run``, as users launch train.py).
    With ``check`` a non-zero exit fails with the last 4,000 characters of output.
    """
    port = str(free_port())
    bindir = Path(sys.executable).parent
    if launcher == "torchrun":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
               "--master_addr", "127.0.0.1", "--master_port", port]
    elif launcher == "colossalai":
        cmd = [str(bindir / "colossalai"), "run", "--nproc_per_node", str(nproc), "--master_port", port]
    else:
        raise ValueError(f"unknown launcher {launcher!r}")
    cmd += [str(script), *map(str, args)]
    run_env = test_env(env)
    # `colossalai run` calls `torchrun` by name: make the venv's copy the one found.
    run_env["PATH"] = os.pathsep.join([str(bindir), run_env.get("PATH", "")])
    # A session of its own, so a hung run is killed with every rank it started (no orphans holding ports).
    popen = subprocess.Popen(cmd, env=run_env, cwd=cwd or REPO_ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = popen.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(popen.pid, signal.SIGKILL)
        out, _ = popen.communicate()
        raise AssertionError(f"{' '.join(cmd)} timed out after {timeout}s; output tail:\n{(out or '')[-4000:]}") from None
    proc = subprocess.CompletedProcess(cmd, popen.returncode, out, None)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}; output tail:\n{proc.stdout[-4000:]}")
    return proc


def run_script(args: list[str], *, timeout: float = 600, env: dict[str, str] | None = None,
               cwd: str | os.PathLike | None = None, input_text: str | None = None) -> subprocess.CompletedProcess:
    """Run ``python args...`` in a subprocess (single process) with the test environment; never raises on exit code.

    ``input_text`` is fed to its standard input (otherwise stdin is empty).
    """
    return subprocess.run([sys.executable, *map(str, args)], env=test_env(env), cwd=cwd or REPO_ROOT,
                          input=input_text or "", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=timeout)


def signal_workers_after(script: str | os.PathLike, args: list, metrics: Path, log_path: Path, *,
                         after_rows: int = 3, sig: int = signal.SIGTERM) -> tuple[int, str]:
    """Start ``script args`` on 2 torchrun ranks, wait until ``metrics`` has ``after_rows`` lines, send ``sig`` to
    every worker (what a cluster scheduler does on preemption) and wait for the end: (exit code, output)."""
    import time

    import psutil

    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), str(script), *map(str, args)]
    with open(log_path, "w+") as log:
        proc = subprocess.Popen(cmd, env=test_env(), cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + 180
            while time.time() < deadline and proc.poll() is None:
                if metrics.exists() and len(metrics.read_text().splitlines()) >= after_rows:
                    break
                time.sleep(0.2)
            assert proc.poll() is None, "run ended before it could be signalled"
            workers = psutil.Process(proc.pid).children()
            assert len(workers) == 2
            for w in workers:
                os.kill(w.pid, sig)
            code = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
        log.seek(0)
        return code, log.read()
