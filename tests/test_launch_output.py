"""A failed launch through ``python -m colossal_llama2.launch`` ends with one line naming the workers' first error,
with neither torchrun's own traceback nor ``colossalai run``'s dump of the environment (a made-up token here)."""
from __future__ import annotations

import pytest

import os
import subprocess
import sys

from colossal_llama2.launch_output import LaunchOutput
from tests.helpers import distributed as dist_helpers

pytestmark = pytest.mark.stack_neutral  # CI runs it on the default transformers stack only

TOKEN = "hf_madeUpToken_8c2e41f0"


def test_failed_launch_prints_neither_traceback_nor_environment(tmp_path, tiny_model_dir):
    env = dist_helpers.test_env({"HF_TOKEN": TOKEN, "MY_API_KEY": TOKEN})
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env["PATH"]])
    command = [sys.executable, "-m", "colossal_llama2.launch", "colossalai", "run", "--nproc_per_node", "2",
               "--master_port", str(dist_helpers.free_port()), str(dist_helpers.REPO_ROOT / "train.py"),
               "--pretrained", str(tiny_model_dir), "--dataset", str(tmp_path / "missing"), "--plugin", "ddp"]
    proc = subprocess.run(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=240)
    assert proc.returncode != 0
    assert TOKEN not in proc.stdout
    assert "Traceback" not in proc.stdout and "ChildFailedError" not in proc.stdout and "Root Cause" not in proc.stdout
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("[colossal_llama2.launch] the run failed (exit status 1): error: --dataset: ")
    assert "does not exist" in last


def test_a_workers_traceback_passes_and_its_exception_is_the_summary():
    output = LaunchOutput()
    lines = ["[rank1]: Traceback (most recent call last):\n", '[rank1]:   File "train.py", line 3, in <module>\n',
             "[rank1]: RuntimeError: CUDA out of memory\n",
             "Traceback (most recent call last):\n", '  File "/bin/torchrun", line 8, in <module>\n',
             "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: \n", "=" * 60 + "\n",
             "train.py FAILED\n", "Root Cause (first observed failure):\n", "=" * 60 + "\n", "after the table\n",
             f'Command: \'cd /x && export HF_TOKEN="{TOKEN}" PATH="/bin" && torchrun train.py\'\n']
    shown = [out for line in lines for out in output.feed(line)] + output.flush()
    assert shown[:3] == lines[:3] and shown[3] == "after the table\n" and len(shown) == 5
    assert TOKEN not in "".join(shown)
    assert output.summary(1).endswith("(exit status 1): RuntimeError: CUDA out of memory")


def torchrun_failure_table(host: str, rank: int, exitcode: str, traceback: str, time: str) -> list[str]:
    """One host's torchrun failure report as torch 2.x prints it (the lines the launch wrapper reads)."""
    rule = "=" * 60
    return ["Traceback (most recent call last):\n", '  File "/bin/torchrun", line 8, in <module>\n',
            "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: \n", rule + "\n",
            "train.py FAILED\n", "-" * 60 + "\n", "Failures:\n", "  <NO_OTHER_FAILURES>\n", "-" * 60 + "\n",
            "Root Cause (first observed failure):\n", "[0]:\n", f"  time      : {time}\n", f"  host      : {host}\n",
            f"  rank      : {rank} (local_rank: 0)\n", f"  exitcode  : {exitcode}\n", "  error_file: <N/A>\n",
            f"  traceback : {traceback}\n", rule + "\n"]


def test_a_killed_rank_is_the_story_when_its_peers_fail_in_the_same_second():
    """Host 1's ranks see the connection close and exit in the same second host 2's rank is SIGKILLed; host 1's
    table comes first. The summary names the killed rank, not the first peer's error line."""
    output = LaunchOutput()
    peer_error = "error: rank 3: the process group failed after step 16 (Connection reset by peer)\n"
    lines = [peer_error,
             *torchrun_failure_table("node-1", 0, "4 (pid: 24672)", "To enable traceback see: https://x",
                                     "2026-12-05_10:32:05"),
             *torchrun_failure_table("node-2", 2, "-9 (pid: 24671)  (SIGKILL)", "Signal 9 (SIGKILL) received by PID 24671",
                                     "2026-12-05_10:32:05")]
    shown = [out for line in lines for out in output.feed(line)] + output.flush()
    assert shown == [peer_error]
    assert output.summary(1).endswith(
        "(exit status 1): rank 2 (host node-2) failed first: Signal 9 (SIGKILL) received by PID 24671")


def test_a_rank_that_failed_a_second_earlier_comes_before_a_later_signal():
    output = LaunchOutput()
    lines = [*torchrun_failure_table("node-2", 2, "-9 (pid: 7)  (SIGKILL)", "Signal 9 (SIGKILL) received by PID 7",
                                     "2026-12-05_10:32:06"),
             *torchrun_failure_table("node-1", 0, "1 (pid: 5)", "To enable traceback see: https://x",
                                     "2026-12-05_10:32:05")]
    for line in lines:
        output.feed(line)
    assert output.first_failure() == "rank 0 (host node-1) failed first: exit status 1"


@pytest.mark.parametrize("said", [
    "Connection closed by peer [127.0.0.1]:9435",
    "Read error [127.0.0.1]:48025: Connection reset by peer",
    # a stalled peer, gloo's timeout as DDP raises it from the gradient bucket's allreduce callback
    "Got the following error when running the callback: RuntimeError: Application timeout caused pair closure",
])
def test_what_gloo_says_when_a_peer_is_gone_is_a_lost_peer(said):
    from colossal_llama2.training.lifecycle.process_group import PEER_FAILURES

    assert PEER_FAILURES.search(said)
    assert not PEER_FAILURES.search("RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB")


def test_another_hosts_log_line_inside_a_torchrun_traceback_neither_ends_it_nor_hides_the_table():
    """Two hosts' output interleaves (seen in a two-host run): host 1's torchrun logs "Sending process ... SIGTERM"
    between the lines of host 2's torchrun traceback. That line is shown, the traceback and its table are still
    read and dropped, and host 2's SIGKILLed rank is the summary."""
    output = LaunchOutput()
    peer_error = "error: rank 1: the process group failed after step 14 (Connection reset by peer)\n"
    host1_log = ("W1205 13:26:08.978000 22850 .venv/lib/python3.11/site-packages/torch/distributed/elastic/"
                 "multiprocessing/api.py:1028] Sending process 22963 closing signal SIGTERM\n")
    host2 = torchrun_failure_table("node-2", 2, "-9 (pid: 22962)  (SIGKILL)",
                                   "Signal 9 (SIGKILL) received by PID 22962", "2026-12-05_13:26:08")
    host2[2:2] = [host1_log, "    sys.exit(main())\n", "             ^^^^^^\n"]
    lines = [peer_error, *host2, *torchrun_failure_table("node-1", 1, "4 (pid: 22964)",
                                                         "To enable traceback see: https://x", "2026-12-05_13:26:08")]
    shown = [out for line in lines for out in output.feed(line)] + output.flush()
    assert shown == [peer_error, host1_log]
    assert output.summary(1).endswith(
        "(exit status 1): rank 2 (host node-2) failed first: Signal 9 (SIGKILL) received by PID 22962")


def test_a_progress_bar_and_a_peers_error_inside_a_torchrun_traceback_do_not_end_it():
    """Seen in a two-host run: host 1's rank 0 ended its progress bar and printed its error line between the frames
    of host 2's torchrun traceback. Both are shown; the traceback and its table are still dropped."""
    output = LaunchOutput()
    bar = "train:   0%|          | 11/2500 [00:00<03:17, 12.59it/s, loss=6.1209, lr=1.0e-02]\n"
    peer_error = "error: rank 0: the process group failed after step 12 (Connection closed by peer)\n"
    host2 = torchrun_failure_table("node-2", 2, "-9 (pid: 14263)  (SIGKILL)",
                                   "Signal 9 (SIGKILL) received by PID 14263", "2026-12-05_16:24:42")
    host2[2:2] = ["\n", bar, peer_error, "    run(args)\n", '  File "/torch/distributed/run.py", line 1019, in run\n']
    shown = [out for line in host2 for out in output.feed(line)] + output.flush()
    assert shown == [bar, peer_error]
    assert output.summary(1).endswith(
        "(exit status 1): rank 2 (host node-2) failed first: Signal 9 (SIGKILL) received by PID 14263")


def test_a_killed_rank_listed_among_the_other_failures_is_still_the_story():
    """torchrun names as root cause the first failure by its one-second stamp; in a tie it may be the peer that saw
    the killed rank's connection close. The killed rank then stands under "Failures:", and is read there."""
    output = LaunchOutput()
    table = torchrun_failure_table("node-2", 3, "4 (pid: 14264)", "To enable traceback see: https://x",
                                   "2026-12-05_16:24:42")
    at = table.index("  <NO_OTHER_FAILURES>\n")
    table[at:at + 1] = ["[1]:\n", "  time      : 2026-12-05_16:24:42\n", "  host      : node-2\n",
                        "  rank      : 2 (local_rank: 0)\n", "  exitcode  : -9 (pid: 14263)  (SIGKILL)\n",
                        "  error_file: <N/A>\n", "  traceback : Signal 9 (SIGKILL) received by PID 14263\n"]
    for line in ["error: rank 3: the process group failed after step 12 (Connection reset by peer)\n", *table]:
        assert output.feed(line) in ([], [line])
    assert output.summary(1).endswith(
        "(exit status 1): rank 2 (host node-2) failed first: Signal 9 (SIGKILL) received by PID 14263")


def test_two_torchrun_tracebacks_interleaved_are_both_dropped():
    """Seen in a two-host run: both hosts' torchruns failed at once, and their tracebacks interleaved line by line
    (each "Traceback" line, then frames of both, then one table, the other's last frames and its table)."""
    output = LaunchOutput()
    host2 = torchrun_failure_table("node-2", 2, "-9 (pid: 19904)  (SIGKILL)",
                                   "Signal 9 (SIGKILL) received by PID 19904", "2026-12-05_16:32:25")
    host1 = torchrun_failure_table("node-1", 0, "4 (pid: 19903)", "To enable traceback see: https://x",
                                   "2026-12-05_16:32:25")
    frames = ["    sys.exit(main())\n", "             ^^^^^^\n", "    run(args)\n",
              '  File "/torch/distributed/run.py", line 1019, in run\n']
    peer_error = "error: rank 3: the process group failed after step 10 (Connection closed by peer)\n"
    lines = [host2[0], host1[0], host2[1], host1[1], frames[0], peer_error, frames[1], *host2[2:], frames[2],
             frames[3], *host1[2:], "after both\n"]
    shown = [out for line in lines for out in output.feed(line)] + output.flush()
    assert shown == [peer_error, "after both\n"]
    assert output.summary(1).endswith(
        "(exit status 1): rank 2 (host node-2) failed first: Signal 9 (SIGKILL) received by PID 19904")


def test_a_workers_traceback_without_an_exception_line_is_shown_at_the_end():
    output = LaunchOutput()
    lines = ["Traceback (most recent call last):\n", '  File "train.py", line 3, in <module>\n']
    assert [out for line in lines for out in output.feed(line)] == []
    assert output.flush() == lines


def test_colossalai_runs_report_of_one_host_inside_the_others_traceback_is_not_its_exception():
    """colossalai run reports host 2's failed command ("Error: failed to run ...", "Stdout: already printed") while
    host 1's torchrun traceback may still be arriving: shown, and the traceback still read to its end and dropped."""
    output = LaunchOutput()
    host1 = torchrun_failure_table("node-1", 0, "4 (pid: 5)", "To enable traceback see: https://x", "2026-12-05_16:32:25")
    report = ["Error: failed to run torchrun --nproc_per_node=2 train.py on node-2, is localhost: False, exception: "
              "Encountered a bad command exit code!\n", "\n", "Exit code: 1\n", "\n", "Stdout: already printed\n",
              "\n", "Stderr: already printed\n"]
    lines = [*host1[:2], *report, *host1[2:]]
    shown = [out for line in lines for out in output.feed(line)] + output.flush()
    assert "".join(shown) == "".join(line for line in report if line.strip())
