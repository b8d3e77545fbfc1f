"""Optimizer-side state that colossalai's checkpoint IO does not keep: zero2's fp32 master weights and the
low-memory optimizers' states (``--optimizer adamw_bf16|adamw8bit``).

zero2 keeps fp32 master copies of the bf16 weights; colossalai saves only the bf16 weights and, on load,
re-derives the masters from them, so every resume rounded the weights to bf16 and the resumed run left the
uninterrupted one's curve from its first update. Each rank saves its master shards,
``optimizer/master-rank-RRRRR.safetensors`` (4 bytes per parameter over all ranks), and a resume on as many ranks
restores them exactly; on another number of ranks they are re-derived from the bf16 weights, as before, with a
warning.

colossalai's zero2 checkpoint IO gathers every optimizer state tensor over the ranks as a flat tensor of the
parameter's size, which torchao's block-quantised 8-bit states (a tensor subclass holding codes and scales)
are not. These states are written as they are instead: each data-parallel rank saves its own shard of them,
``optimizer/rank-RRRRR.pt``, 8-bit states staying 8-bit (a quarter of fp32 Adam's bytes on disk). A resume
must then use the same number of data-parallel ranks, which the load checks.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
import torch.distributed as dist

from ...utils.errors import UserInputError

RANK_FILE = "rank-{:05d}.pt"
MASTER_FILE = "master-rank-{:05d}.safetensors"


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


def read_tensors(path: Path):
    """``torch.load`` that runs no code from the file: tensors and plain containers only (``weights_only``;
    torchao registers its optimizer-state tensor subclasses as safe), so a checkpoint someone else wrote cannot
    execute anything when resumed. One clear error otherwise."""
    import pickle

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserInputError(f"{path} holds more than tensors and plain values, so it is not loaded (it could run "
                             f"code): {first}", where="--load_checkpoint") from None


def load_rank_states(optimizer, directory: Path) -> None:
    inner = torchao_optimizer(optimizer)
    if inner is None:
        raise UserInputError(f"{directory} holds --optimizer adamw_bf16/adamw8bit states; resume with the same "
                             f"--optimizer", where="--load_checkpoint")
    rank, world = _world()
    path = Path(directory) / RANK_FILE.format(rank)
    if not path.is_file():
        raise UserInputError(f"{path} is missing: the checkpoint's low-memory optimizer states were written by "
                             f"fewer ranks than the {world} of this run", where="--load_checkpoint")
    saved = read_tensors(path)
    if saved["world_size"] != world:
        raise UserInputError(f"{directory}: low-memory optimizer states were saved by {saved['world_size']} ranks; "
                             f"resume them on as many (this run has {world})", where="--load_checkpoint")
    inner.load_state_dict(saved["state_dict"])


def _zero_optimizer_with_masters(optimizer):
    """The LowLevelZeroOptimizer holding fp32 master weights, or None (no zero2, or no masters)."""
    from colossalai.zero.low_level.low_level_optim import LowLevelZeroOptimizer

    inner = optimizer if isinstance(optimizer, LowLevelZeroOptimizer) else getattr(optimizer, "optim", None)
    if isinstance(inner, LowLevelZeroOptimizer) and inner._master_weights:
        return inner
    return None


def _master_shards(zero) -> dict[str, torch.Tensor]:
    return {f"{g}.{i}": master for g in range(zero.num_param_groups)
            for i, master in enumerate(zero._master_param_groups_of_current_rank[g])}


def save_master_weights(optimizer, directory: Path) -> bool:
    """zero2: every rank writes its fp32 master shards (call on every rank); False when there are none."""
    zero = _zero_optimizer_with_masters(optimizer)
    if zero is None:
        return False
    from safetensors.torch import save_file

    rank, world = _world()
    save_file({name: t.detach().cpu().contiguous() for name, t in _master_shards(zero).items()},
              str(Path(directory) / MASTER_FILE.format(rank)), metadata={"world_size": str(world)})
    return True


class MasterLoad(NamedTuple):
    """What ``load_master_weights`` did: ``rounded`` when the masters were re-derived from the bf16 weights
    (the resume then differs from the uninterrupted run by that rounding)."""
    rounded: bool
    message: str


def load_master_weights(optimizer, directory: Path) -> MasterLoad:
    """After the model's bf16 weights are loaded: this rank's fp32 master shards, where the checkpoint has them
    for this number of ranks."""
    zero = _zero_optimizer_with_masters(optimizer)
    if zero is None:
        return MasterLoad(False, "no fp32 master weights")
    from safetensors import safe_open

    rank, world = _world()
    path = Path(directory) / MASTER_FILE.format(rank)
    if not path.is_file():
        return MasterLoad(True, "fp32 master weights re-derived from the bf16 weights (the checkpoint has none)")
    with safe_open(str(path), framework="pt") as f:
        saved_world = int(f.metadata().get("world_size", -1))
        if saved_world != world:
            return MasterLoad(True, f"fp32 master weights re-derived from the bf16 weights (saved by {saved_world} "
                                    f"ranks, this run has {world})")
        shards = _master_shards(zero)
        if set(f.keys()) != set(shards):
            raise UserInputError(f"{path} does not match this model's parameters", where="--load_checkpoint")
        with torch.no_grad():
            for name, master in shards.items():
                master.copy_(f.get_tensor(name))
    return MasterLoad(False, "fp32 master weights restored")
