"""The process group across hosts: started with a timeout, its save directory checked, a lost peer reported.

* ``start_process_group``: what ``colossalai.launch_from_torch`` does (the accelerator's backend, the device, the
  seeds), with ``--dist_timeout_s`` as the group's timeout, so that a peer that died or stopped answering ends the
  run on the other hosts instead of leaving them in a collective until NCCL's 10 minutes (or gloo's 30) pass.
* ``check_shared_save_dir``: every host must write checkpoints into one directory (a shared file system); a
  node-local disk would leave each host a part of every checkpoint. Each node writes a marker, node 0's first rank
  must see all of them.
* ``LostPeer``: a collective that failed because a peer is gone, turned into one line and a non-zero exit; no
  checkpoint is written after it (one being written stays a dot-directory, never taken for a checkpoint).
"""
from __future__ import annotations

import os
import re
import uuid
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from ...utils.errors import FatalRunError, UserInputError

# What gloo and NCCL say when a peer's connection is gone or a collective outlived the group's timeout.
PEER_FAILURES = re.compile(r"Connection (closed|reset) by peer|Broken pipe|Timed out|timed out|Socket Timeout|"
                           r"NCCL communicator was aborted|NCCL error|ProcessGroupNCCL.*(timeout|Watchdog)|"
                           r"failed to recv|Connection refused|"
                           # gloo's timeout, also as DDP reports it from its gradient bucket's callback
                           r"Application timeout caused pair closure", re.S)
MARKER_PREFIX = ".node-marker-"


class LostPeer(FatalRunError):
    """A collective failed because another rank died or stopped answering: exit status 4."""

    exit_code = 4


def start_process_group(timeout_s: float, seed: int) -> None:
    """The default process group from torchrun's environment, with ``timeout_s`` on every collective."""
    from colossalai.accelerator import get_accelerator
    from colossalai.utils import set_seed

    accelerator = get_accelerator()
    dist.init_process_group(backend=accelerator.communication_backend, timeout=timedelta(seconds=timeout_s))
    if accelerator.support_set_device:
        accelerator.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    set_seed(seed)
    try:
        torch._dynamo.config.optimize_ddp = dist.get_world_size() > 1
    except AttributeError:
        pass


def check_shared_save_dir(save_dir: str | os.PathLike) -> None:
    """Every host sees the same ``save_dir``, or every rank raises the same one-line error."""
    save_dir = Path(save_dir)
    node, local_rank = int(os.environ.get("GROUP_RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    nodes = dist.get_world_size() // int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    run = [uuid.uuid4().hex if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(run, src=0)
    marker = save_dir / f"{MARKER_PREFIX}{run[0]}-{node}"
    if local_rank == 0:
        save_dir.mkdir(parents=True, exist_ok=True)
        marker.write_text(os.uname().nodename, encoding="utf-8")
    dist.barrier()
    verdict = [None]
    if dist.get_rank() == 0:
        missing = [n for n in range(nodes) if not (save_dir / f"{MARKER_PREFIX}{run[0]}-{n}").exists()]
        if missing:
            verdict[0] = (f"{save_dir} is not one directory on every host: node(s) {', '.join(map(str, missing))} "
                          f"write elsewhere (a node-local disk?); put --save_dir on a file system every host mounts")
    dist.broadcast_object_list(verdict, src=0)
    dist.barrier()
    if local_rank == 0:
        marker.unlink(missing_ok=True)
    if verdict[0]:
        raise UserInputError(verdict[0], where="--save_dir")


def is_peer_failure(err: BaseException) -> bool:
    """Whether ``err`` is a collective failing because a peer is gone (not a bug of this rank)."""
    backend_error = getattr(dist, "DistBackendError", ())
    return bool(dist.is_initialized() and (isinstance(err, backend_error) or (
        isinstance(err, RuntimeError) and PEER_FAILURES.search(str(err)))))


def lost_peer(err: BaseException, *, step: int, timeout_s: float, last_checkpoint) -> LostPeer:
    """The one line for a rank whose collective failed: what the backend said, and what is safe on disk."""
    said = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
    said = re.sub(r"\[[^\]]*\.(?:cc|cpp|h|hpp):\d+\]\s*", "", said)  # the backend's source locations
    kept = f"the last complete checkpoint is {last_checkpoint}" if last_checkpoint else "no checkpoint was written"
    return LostPeer(f"rank {dist.get_rank()}: the process group failed after step {step} ({said}): another rank died "
                    f"or did not answer within --dist_timeout_s {timeout_s:g}; {kept}")
