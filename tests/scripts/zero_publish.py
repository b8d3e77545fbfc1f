"""Two gloo ranks: zero_speed.publish_working_params writes each rank's master shard into its slot of the
working weights and all-gathers them in place, padding included (a 15-element weight over 2 ranks)."""
from __future__ import annotations

import types

import torch
import torch.distributed as dist
import torch.nn.functional as F

from colossal_llama2.training.zero_speed import publish_working_params


def colossalai_layout(param: torch.Tensor, world: int) -> torch.Tensor:
    """What LowLevelZeroOptimizer does to a working param: its data becomes a view of a padded flat buffer."""
    padding = (world - param.numel() % world) % world
    padded = F.pad(param.data.view(-1), [0, padding])
    param.data = padded[:param.numel()].view(param.shape)
    return padded


def main() -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    shapes = [(5, 3), (4, 4), (7,)]
    working = [torch.zeros(s, dtype=torch.bfloat16) for s in shapes]
    padded = {w: colossalai_layout(w, world) for w in working}
    # the updated full weights every rank should end with; rank r holds its slot of each in fp32
    full = [torch.randn(p.numel(), generator=torch.Generator().manual_seed(i)) for i, p in enumerate(padded.values())]
    masters = [f.chunk(world)[rank].clone() for f in full]
    fake = types.SimpleNamespace(
        _working_param_to_padded_working_param=padded, param_to_pg={w: dist.group.WORLD for w in working},
        pid_to_bucket_store={id(w): types.SimpleNamespace(local_rank=rank, world_size=world) for w in working})
    publish_working_params(fake, [(w, m, None) for w, m in zip(working, masters)])
    for w, f in zip(working, full):
        expected = f[:w.numel()].to(torch.bfloat16).view(w.shape)
        assert torch.equal(w, expected), (rank, w, expected)
    print(f"rank {rank}: published OK", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
