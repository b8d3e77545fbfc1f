"""Checkpointed states of the low-memory optimizers (``--optimizer adamw_bf16|adamw8bit``).

colossalai's zero2 checkpoint IO gathers every optimizer state tensor over the ranks as a flat tensor of the
parameter's size, which torchao's block-quantised 8-bit states (a tensor subclass holding codes and scales)
are not. These states are written as they are instead: each data-parallel rank saves its own shard of them,
``optimizer/rank-RRRRR.pt``, 8-bit states staying 8-bit (a quarter of fp32 Adam's bytes on disk). A resume
must then use the same number of data-parallel ranks, which the load checks.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist

from ..utils.errors import UserInputError

RANK_FILE = "rank-{:05d}.pt"


def torchao_optimizer(optimizer):
    """The torchao optimizer inside a boosted optimizer (zero2's LowLevelZeroOptimizer or ddp's wrapper), or
    None for any other optimizer."""
    inner = getattr(optimizer, "optim", optimizer)
    inner = getattr(inner, "optim", inner)  # zero2: Booster wrapper -> LowLevelZeroOptimizer -> torchao
    return inner if type(inner).__module__.startswith("torchao.") else None


def _world() -> tuple[int, int]:
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def save_rank_states(optimizer, directory: Path) -> None:
    """Every rank writes its own states (call on every rank; ``directory`` exists)."""
    rank, world = _world()
    torch.save({"world_size": world, "state_dict": torchao_optimizer(optimizer).state_dict()},
               Path(directory) / RANK_FILE.format(rank))


def has_rank_states(directory: Path) -> bool:
    return (Path(directory) / RANK_FILE.format(0)).is_file()


def load_rank_states(optimizer, directory: Path) -> None:
    rank, world = _world()
    path = Path(directory) / RANK_FILE.format(rank)
    if not path.is_file():
        raise UserInputError(f"{path} is missing: the checkpoint's low-memory optimizer states were written by "
                             f"fewer ranks than the {world} of this run", where="--load_checkpoint")
    # our own file, holding torchao's tensor subclasses: not loadable with weights_only
    saved = torch.load(path, map_location="cpu", weights_only=False)
    if saved["world_size"] != world:
        raise UserInputError(f"{directory}: low-memory optimizer states were saved by {saved['world_size']} ranks; "
                             f"resume them on as many (this run has {world})", where="--load_checkpoint")
    inner = torchao_optimizer(optimizer)
    if inner is None:
        raise UserInputError(f"{directory} holds --optimizer adamw_bf16/adamw8bit states; resume with the same "
                             f"--optimizer", where="--load_checkpoint")
    inner.load_state_dict(saved["state_dict"])
