"""Several hosts for real: ``colossalai run --hostfile`` across two hosts over ssh, on one machine.

The second host is an sshd of the tests' own listening on 127.0.0.2 (key auth for the current user, its own host
key, torn down afterwards). 127.0.0.2 is not ``localhost`` to colossalai, so it starts that host's ranks the way it
does on a cluster: over ssh (fabric), exporting the environment, in the same working directory. ``HOME`` points at
a directory holding the test's ssh key, so nothing of the user's own ssh setup is used or changed. A third host,
127.0.0.3, runs its sshd in a mount namespace of its own, where the save directory is a different (tmpfs) disk: a
node-local save directory.

The launches go through ``python -m colossal_llama2.launch`` as ``train.example.sh`` does. Skipped where there is no
sshd (``.ci/run`` installs openssh-server).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from colossal_llama2.training.checkpoint.directory import list_checkpoints
from tests.helpers import distributed as dist_helpers
from tests.scripts.fixture_dataset import build_dataset

pytestmark = pytest.mark.slow
# Launch mechanics (hostfiles, stops, lost peers): neutral to the transformers stack, run on the default one; the
# training run across two hosts runs on both.
neutral = pytest.mark.stack_neutral
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
TRAIN = dist_helpers.REPO_ROOT / "train.py"


class SecondHost:
    """An sshd on ``address``:``port`` accepting the key under ``home``/.ssh (optionally in a mount namespace of its
    own where ``private_dir`` is another disk)."""

    def __init__(self, root: Path, address: str, port: int, private_dir: Path | None = None):
        self.address, self.port, self.home = address, port, root / "home"
        ssh_dir, server = self.home / ".ssh", root / "sshd"
        ssh_dir.mkdir(parents=True)
        server.mkdir()
        for key in (ssh_dir / "id_ed25519", server / "host_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        shutil.copy(ssh_dir / "id_ed25519.pub", server / "authorized_keys")
        (server / "config").write_text("\n".join([
            f"ListenAddress {address}", f"Port {port}", f"HostKey {server / 'host_key'}",
            f"AuthorizedKeysFile {server / 'authorized_keys'}", f"PidFile {server / 'pid'}", "StrictModes no",
            "UsePAM no", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password", "PubkeyAuthentication yes", "LogLevel ERROR", ""]))
        Path("/run/sshd").mkdir(exist_ok=True) if os.geteuid() == 0 else None
        command = [SSHD, "-D", "-f", str(server / "config"), "-E", str(server / "log")]
        if private_dir is not None:  # another "disk" mounted over private_dir, seen by this host's processes only
            private_dir.mkdir(parents=True, exist_ok=True)
            command = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                       f"mount -t tmpfs tmpfs {private_dir} && exec {' '.join(command)}"]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 20
        while time.time() < deadline and self.proc.poll() is None:
            if _listening(address, port):
                return
            time.sleep(0.1)
        err = self.proc.stderr.read().decode() if self.proc.poll() is not None else "no answer"
        self.stop()
        pytest.skip(f"cannot start an sshd on {address}:{port}: {err.strip()[:300]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def _listening(address: str, port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((address, port)) == 0


@pytest.fixture(scope="module")
def host2(tmp_path_factory):
    if not os.path.exists(SSHD):
        pytest.skip("no sshd (apt-get install openssh-server)")
    host = SecondHost(tmp_path_factory.mktemp("host2"), "127.0.0.2", dist_helpers.free_port())
    yield host
    host.stop()


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_tokenizer_dir):
    return build_dataset(tiny_tokenizer_dir, tmp_path_factory.mktemp("two_host_data"), max_length=64, num_parts=2)


def train_args(model_dir, data, out: Path, **overrides) -> list[str]:
    args = {"--pretrained": model_dir, "--dataset": data, "--plugin": "ddp", "--max_length": 64,
            "--micro_batch_size": 1, "--lr": 1e-2, "--save_dir": out / "ckpt", "--padding_mode": "longest",
            "--max_steps": 6, "--save_interval": 3, "--seed": 5, "--tensorboard_dir": out / "tb"}
    args.update(overrides)
    return [str(x) for k, v in args.items() if v is not None for x in (k, v)]


class Launch:
    """``python -m colossal_llama2.launch colossalai run --hostfile ... train.py ...`` in a session of its own."""

    def __init__(self, host: SecondHost, out: Path, hostfile: Path, args: list[str], nproc: int = 2):
        out.mkdir(parents=True, exist_ok=True)
        self.out = out
        env = dist_helpers.test_env({"HOME": str(host.home)})
        env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env["PATH"]])
        command = [sys.executable, "-m", "colossal_llama2.launch", "colossalai", "run", "--nproc_per_node",
                   str(nproc), "--hostfile", str(hostfile), "--ssh-port", str(host.port), "--master_port",
                   str(dist_helpers.free_port()), str(TRAIN), *args]
        self.log = open(out / "log.txt", "w+", encoding="utf-8")
        self.proc = subprocess.Popen(command, env=env, cwd=out, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def wait(self, timeout: float = 240) -> int | None:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def output(self) -> str:
        self.log.flush()
        return (self.out / "log.txt").read_text(encoding="utf-8", errors="replace")

    def metrics(self) -> dict[int, dict]:
        path = self.out / "tb" / "metrics.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        return {r["step"]: r for r in rows if "loss" in r}

    def wait_for_checkpoint(self, timeout: float = 180) -> None:
        deadline = time.time() + timeout
        while not list_checkpoints(self.out / "ckpt"):
            assert self.proc.poll() is None, self.output()[-3000:]
            assert time.time() < deadline, self.output()[-3000:]
            time.sleep(0.2)

    def processes(self) -> list[psutil.Process]:
        """Every live process of the run, on either host (both are this machine): their command lines name out/."""
        found = []
        for p in psutil.process_iter(["cmdline", "status"]):
            if p.info["status"] != psutil.STATUS_ZOMBIE and str(self.out) in " ".join(p.info["cmdline"] or []):
                found.append(p)
        return found

    def worker(self, node: int, local_rank: int) -> psutil.Process:
        for p in self.processes():
            try:
                env = p.environ()
            except psutil.Error:
                continue
            if (env.get("GROUP_RANK"), env.get("LOCAL_RANK")) == (str(node), str(local_rank)) and \
                    "torchrun" not in " ".join(p.cmdline()[:3]):
                return p
        raise AssertionError(f"no worker {local_rank} on node {node}")

    def leftovers(self, timeout: float = 30) -> list[str]:
        deadline = time.time() + timeout
        while (left := self.processes()) and time.time() < deadline:
            time.sleep(0.2)
        return [" ".join(p.cmdline())[:120] for p in left]

    def kill(self) -> None:
        for p in self.processes():
            try:
                p.resume()
                p.kill()
            except psutil.Error:
                pass


def the_shipped_hostfile(tmp_path: Path, *hosts: str) -> Path:
    """hostfile.example as a user edits it: its placeholder names replaced by the hosts."""
    text = (dist_helpers.REPO_ROOT / "hostfile.example").read_text()
    names = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert len(names) == len(hosts)
    for name, host in zip(names, hosts):
        text = text.replace(name, host, 1)
    path = tmp_path / "hostfile"
    path.write_text(text)
    return path


def test_two_hosts_train_save_and_resume_exactly_then_on_one_host(tmp_path, host2, tiny_model_dir, data):
    hostfile = the_shipped_hostfile(tmp_path, "localhost", host2.address)
    full = Launch(host2, tmp_path / "full", hostfile, train_args(tiny_model_dir, data, tmp_path / "full"))
    assert full.wait() == 0, full.output()[-3000:]
    assert "world size 4" in full.output()
    assert [p.name for p in list_checkpoints(tmp_path / "full" / "ckpt")] == ["epoch-0_step-3", "epoch-0_step-6"]
    resumed = Launch(host2, tmp_path / "resumed", hostfile, train_args(
        tiny_model_dir, data, tmp_path / "resumed", **{"--load_checkpoint": tmp_path / "full/ckpt/epoch-0_step-3"}))
    assert resumed.wait() == 0, resumed.output()[-3000:]
    want, got = full.metrics(), resumed.metrics()
    assert sorted(got) == [4, 5, 6] and all(got[s]["loss"] == want[s]["loss"] for s in got), [(want[s]["loss"], got[s]["loss"]) for s in got]
    one_host = tmp_path / "one_host"
    one_host.mkdir()
    (one_host / "hostfile").write_text("localhost\n")
    single = Launch(host2, one_host, one_host / "hostfile", train_args(
        tiny_model_dir, data, one_host, **{"--load_checkpoint": tmp_path / "full/ckpt/epoch-0_step-3"}))
    assert single.wait() == 0, single.output()[-3000:]
    assert "world size 2" in single.output() and sorted(single.metrics()) == [4, 5, 6]


@neutral
@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_a_stop_reaches_both_hosts_saves_once_and_leaves_nothing(tmp_path, host2, tiny_model_dir, data, how):
    run = Launch(host2, tmp_path, the_shipped_hostfile(tmp_path, "localhost", host2.address),
                 train_args(tiny_model_dir, data, tmp_path, **{"--max_steps": 3000, "--num_epochs": 100,
                                                               "--save_interval": 100000}))
    try:
        deadline = time.time() + 120
        while len(run.metrics()) < 5:
            assert run.proc.poll() is None and time.time() < deadline, run.output()[-3000:]
            time.sleep(0.2)
        if how == "ctrl-c":
            os.killpg(run.proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C reaches
        else:
            run.proc.send_signal(signal.SIGTERM)  # a scheduler signalling the launch
        assert run.wait(timeout=90) == 0, run.output()[-3000:]
        assert run.leftovers() == []
        last = max(run.metrics())
        (checkpoint,) = list_checkpoints(tmp_path / "ckpt")
        assert checkpoint.name.endswith(f"step-{last}") and (checkpoint / "modeling" / "config.json").is_file()
        states = json.loads((checkpoint / "running_states.json").read_text())
        assert states["global_step"] == last and len(states["rng_states"]) == 4  # every rank of both hosts
    finally:
        run.kill()


@neutral
@pytest.mark.parametrize("how", ["killed", "stalled"])
def test_a_lost_worker_on_host_2_ends_the_run_in_bounded_time(tmp_path, host2, tiny_model_dir, data, how):
    """Host 2's first worker SIGKILLed (the others see its connections close) or SIGSTOPped (they time out after
    --dist_timeout_s): the launch ends, saying which rank; the last complete checkpoint is intact."""
    run = Launch(host2, tmp_path, the_shipped_hostfile(tmp_path, "localhost", host2.address),
                 train_args(tiny_model_dir, data, tmp_path, **{"--max_steps": 3000, "--num_epochs": 100,
                                                               "--save_interval": 10, "--dist_timeout_s": 10}))
    try:
        run.wait_for_checkpoint()
        victim = run.worker(node=1, local_rank=0)
        assert victim.environ()["RANK"] == "2"
        victim.send_signal(signal.SIGKILL if how == "killed" else signal.SIGSTOP)
        started = time.time()
        code = run.wait(timeout=120)
        assert code not in (0, None), run.output()[-3000:]
        assert time.time() - started < (15 if how == "killed" else 90)
        last = run.output().strip().splitlines()[-1]
        assert last.startswith("[colossal_llama2.launch] the run failed")
        if how == "killed":
            assert "rank 2 " in last and "SIGKILL" in last, run.output()[-8000:]
        else:
            assert "did not answer within --dist_timeout_s 10" in last, run.output()[-8000:]
        assert "Traceback" not in run.output(), run.output()[-8000:]
        checkpoints = list_checkpoints(tmp_path / "ckpt")
        assert checkpoints and (checkpoints[-1] / "running_states.json").is_file()
        assert len(json.loads((checkpoints[-1] / "running_states.json").read_text())["rng_states"]) == 4
        assert run.leftovers(timeout=60) == []
    finally:
        run.kill()


@neutral
def test_a_save_dir_on_a_node_local_disk_is_refused(tmp_path_factory, tmp_path, tiny_model_dir, data):
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("a mount namespace for the node-local disk needs root and unshare")
    local = tmp_path / "local"
    host3 = SecondHost(tmp_path_factory.mktemp("host3"), "127.0.0.3", dist_helpers.free_port(), private_dir=local)
    try:
        (tmp_path / "hostfile").write_text(f"localhost\n{host3.address}\n")
        run = Launch(host3, tmp_path / "run", tmp_path / "hostfile", train_args(
            tiny_model_dir, data, tmp_path / "run", **{"--save_dir": local / "ckpt"}), nproc=1)
        assert run.wait() not in (0, None)
        assert run.output().strip().splitlines()[-1].endswith(
            f"error: --save_dir: {local / 'ckpt'} is not one directory on every host: node(s) 1 write elsewhere "
            f"(a node-local disk?); put --save_dir on a file system every host mounts")
        assert run.metrics() == {}
    finally:
        host3.stop()


@pytest.mark.parametrize("text, says", [
    ("localhost\nlocalhost\n", "hostfile:2: host localhost is listed twice (line 1 too)"),
    ("localhost\nno-such-host.invalid\n", "hostfile:2: host no-such-host.invalid does not resolve"),
    ("localhost\n127.0.0.9\n", "hostfile:2: host 127.0.0.9 does not accept ssh on port"),
    ("localhost slots=4\n", "hostfile:1: slots=4, but colossalai run starts --nproc_per_node 2 ranks on every host"),
    ("localhost gpus=2\n", "hostfile:1: 'gpus=2' after the host name"),
])
@neutral
def test_bad_hostfiles_are_one_line_before_anything_starts(tmp_path, host2, tiny_model_dir, data, text, says):
    (tmp_path / "hostfile").write_text(text)
    run = Launch(host2, tmp_path, tmp_path / "hostfile", train_args(tiny_model_dir, data, tmp_path))
    assert run.wait(timeout=60) == 2
    (line,) = run.output().strip().splitlines()
    assert line.startswith("[colossal_llama2.launch] error: ") and says in line, line


@neutral
def test_comments_blank_lines_and_slots_are_read(tmp_path):
    from colossal_llama2.hostfile import prepare_colossalai_run, read_hostfile

    (tmp_path / "hostfile").write_text("# the nodes of the run\nlocalhost slots=2   # this machine\n\n\n")
    assert [(h.name, h.slots, h.line) for h in read_hostfile(tmp_path / "hostfile")] == [("localhost", 2, 2)]
    command, clean = prepare_colossalai_run(["colossalai", "run", "--nproc_per_node", "2", "--hostfile",
                                             str(tmp_path / "hostfile"), "train.py", "--hostfile", "untouched"])
    assert command[5] == str(clean) and command[-1] == "untouched" and clean.read_text() == "localhost\n"
    clean.unlink()
