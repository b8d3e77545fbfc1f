"""Two test processes on one machine never get the same rendezvous port (two suites side by side)."""
from __future__ import annotations

import pytest

import subprocess
import sys

from tests.helpers import distributed as dist_helpers

pytestmark = pytest.mark.stack_neutral  # CI runs it on the default transformers stack only

# Each process keeps its claims until the test has read all three (it waits for its stdin to close): a process
# that has exited and been reaped gives its ports up, by design, to the next one that asks.
GRAB = ("import sys\nfrom tests.helpers.distributed import free_port\n"
        "print(*[free_port() for _ in range(200)], flush=True)\nsys.stdin.read()")


def test_concurrent_processes_get_disjoint_ports():
    procs = [subprocess.Popen([sys.executable, "-c", GRAB], cwd=dist_helpers.REPO_ROOT, env=dist_helpers.test_env(),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(3)]
    try:
        got = [set(map(int, p.stdout.readline().split())) for p in procs]
    finally:
        for p in procs:
            p.communicate(timeout=120)
    assert all(len(ports) == 200 for ports in got)
    assert not (got[0] & got[1] or got[0] & got[2] or got[1] & got[2])


def test_a_dead_process_s_ports_are_taken_over(tmp_path):


    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    claim = tmp_path / "25000"
    claim.write_text(dead.stdout.strip())
    assert dist_helpers._claim(claim) and claim.read_text() == str(__import__("os").getpid())
    assert not dist_helpers._claim(claim)  # now ours, and we live
