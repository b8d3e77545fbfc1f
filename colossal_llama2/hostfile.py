"""Hostfiles the way people write them, checked before anything starts, handed to ``colossalai run`` clean.

``colossalai run --hostfile`` (0.5.0) takes every non-empty line as a host name, so a comment becomes a host (and,
as the first line, the master address: ``UnicodeError: encoding with 'idna' codec failed``). The launch wrapper
reads the hostfile here instead: ``#`` comments (whole lines or after a host), blank lines, and DeepSpeed/MPI
style ``host slots=8`` are accepted; a duplicate host, a name that does not resolve, slots that differ from
``--nproc_per_node`` or a host that refuses ssh is one line naming the hostfile's line, before any process
starts. colossalai then gets a file of bare host names.
"""
from __future__ import annotations

import os
import re
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .utils.errors import UserInputError

SLOTS = re.compile(r"^slots=(\d+)$")
SSH_TIMEOUT_S = 15


@dataclass(frozen=True)
class Host:
    name: str
    slots: int | None
    line: int  # in the hostfile, from 1


def read_hostfile(path: str | os.PathLike) -> list[Host]:
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path} does not exist", where="--hostfile")
    hosts: list[Host] = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        fields = raw.split("#", 1)[0].split()
        if not fields:
            continue
        slots = None
        for extra in fields[1:]:
            match = SLOTS.match(extra)
            if not match:
                raise UserInputError(f"{extra!r} after the host name: expected `host` or `host slots=N`",
                                     where=f"{path}:{number}")
            slots = int(match.group(1))
        earlier = next((h for h in hosts if h.name == fields[0]), None)
        if earlier:
            raise UserInputError(f"host {fields[0]} is listed twice (line {earlier.line} too)", where=f"{path}:{number}")
        hosts.append(Host(fields[0], slots, number))
    if not hosts:
        raise UserInputError(f"{path} names no host", where="--hostfile")
    return hosts


def check_hosts(path: str | os.PathLike, hosts: list[Host], *, nproc_per_node: int | None, ssh_port: int | None) -> None:
    """Every host resolves, takes ``nproc_per_node`` ranks and (when it is not this machine) accepts ssh."""
    from colossalai.cli.launcher.hostinfo import HostInfo

    for host in hosts:
        where = f"{path}:{host.line}"
        try:
            socket.getaddrinfo(host.name, ssh_port or 22)
        except socket.gaierror as err:
            raise UserInputError(f"host {host.name} does not resolve ({err.strerror})", where=where) from None
        if host.slots is not None and nproc_per_node is not None and host.slots != nproc_per_node:
            raise UserInputError(f"slots={host.slots}, but colossalai run starts --nproc_per_node {nproc_per_node} "
                                 f"ranks on every host", where=where)
        if not HostInfo.is_host_localhost(host.name, ssh_port):
            _check_ssh(host, ssh_port, where)


def _check_ssh(host: Host, port: int | None, where: str) -> None:
    """What colossalai run will do on the host, tried first: an ssh connection (fabric, key auth, no password)."""
    import fabric

    connection = fabric.Connection(host.name, port=port, connect_timeout=SSH_TIMEOUT_S)
    try:
        connection.run("true", hide=True, in_stream=False)
    except Exception as err:  # paramiko's and the socket's many errors: all mean the launch would fail there
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserInputError(f"host {host.name} does not accept ssh{f' on port {port}' if port else ''} ({reason}): "
                             f"colossalai run starts the ranks there over ssh, without a password", where=where) from None
    finally:
        connection.close()


def clean_hostfile(hosts: list[Host]) -> Path:
    """A hostfile of bare names, one per line, for colossalai run (in the temp dir: only this machine reads it)."""
    fd, name = tempfile.mkstemp(prefix="colossal_llama2-hostfile-", suffix=".txt")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("".join(f"{h.name}\n" for h in hosts))
    return Path(name)


def _option(argv: list[str], *names: str) -> tuple[int, str] | None:
    """(index of the value, value) of ``--name VALUE`` or ``--name=VALUE`` in ``argv``, if present."""
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                return i + 1, argv[i + 1]
            if arg.startswith(name + "="):
                return i, arg[len(name) + 1:]
    return None


def prepare_colossalai_run(argv: list[str]) -> tuple[list[str], Path | None]:
    """(the command, the clean hostfile written for it or None): ``colossalai run ... --hostfile F ...`` with F read,
    checked and replaced by a clean copy; other commands unchanged. Only the launcher's own options (before the
    training script) are looked at."""
    if len(argv) < 2 or os.path.basename(argv[0]) != "colossalai" or argv[1] != "run":
        return argv, None
    script = next((i for i, a in enumerate(argv) if a.endswith(".py") or a == "-m"), len(argv))
    own = argv[:script]
    found = _option(own, "--hostfile")
    if found is None:
        return argv, None
    index, path = found
    hosts = read_hostfile(path)
    nproc = _option(own, "--nproc_per_node")
    port = _option(own, "--ssh-port", "--ssh_port")
    check_hosts(path, hosts, nproc_per_node=int(nproc[1]) if nproc else None, ssh_port=int(port[1]) if port else None)
    clean = clean_hostfile(hosts)
    out = list(argv)
    out[index] = str(clean) if own[index] == path else f"--hostfile={clean}"
    return out, clean
