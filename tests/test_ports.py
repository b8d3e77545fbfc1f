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


# Each process claims the same 10,000 paths in an order of its own, all starting at once. The paths hold a dead
# process's pid, as claim files of an older suite or a crashed run do.
CONTEND = ("import random, sys\nfrom pathlib import Path\nfrom tests.helpers.distributed import _claim\n"
           "root, seed = Path(sys.argv[1]), int(sys.argv[2])\n"
           "order = list(range(10000)); random.Random(seed).shuffle(order)\n"
           "print('ready', flush=True)\nsys.stdin.readline()\nprint(*[i for i in order if _claim(root / str(i))], flush=True)\nsys.stdin.read()")


def test_contended_claims_are_exclusive_and_stale_files_block_nothing(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    for i in range(10000):
        (tmp_path / str(i)).write_text(dead.stdout.strip())
    procs = [subprocess.Popen([sys.executable, "-c", CONTEND, str(tmp_path), str(seed)], cwd=dist_helpers.REPO_ROOT,
                              env=dist_helpers.test_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for seed in range(3)]
    try:
        assert [p.stdout.readline().strip() for p in procs] == ["ready"] * 3  # imports done: start all at once
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        got = [set(map(int, p.stdout.readline().split())) for p in procs]
    finally:
        for p in procs:
            p.communicate(timeout=120)
    assert not (got[0] & got[1] or got[0] & got[2] or got[1] & got[2])
    assert set.union(*got) == set(range(10000))


HOLD = "import sys\nfrom pathlib import Path\nfrom tests.helpers.distributed import _claim\n" \
       "print(_claim(Path(sys.argv[1])), flush=True)\nsys.stdin.read()"


def test_a_claim_is_held_while_its_process_lives_and_free_once_it_is_gone(tmp_path):
    claim = tmp_path / "25000"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(claim)], cwd=dist_helpers.REPO_ROOT,
                              env=dist_helpers.test_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "True"
    assert not dist_helpers._claim(claim)  # the holder lives
    holder.communicate(timeout=60)
    assert dist_helpers._claim(claim)  # the holder is gone
    assert not dist_helpers._claim(claim)  # now ours, and we live
