"""Two gloo ranks: zero_step.publish_working_params writes each rank's master shard into its slot of the
working weights and all-gathers them in place, padding included (a 15-element weight over 2 ranks); and
update_and_publish starts each chunk's gathers before updating the next chunk, and the weights end complete."""
from __future__ import annotations

import types

import torch
import torch.distributed as dist
import torch.nn.functional as F

from colossal_llama2.training.plugins import zero_step


def colossalai_layout(param: torch.Tensor, world: int) -> torch.Tensor:
    """What LowLevelZeroOptimizer does to a working param: its data becomes a view of a padded flat buffer."""
    padding = (world - param.numel() % world) % world
    padded = F.pad(param.data.view(-1), [0, padding])
    param.data = padded[:param.numel()].view(param.shape)
    return padded


def setup(shapes, rank: int, world: int):
    """Zeroed working weights in colossalai's layout, the optimizer's fields the publication reads, and the
    full weights every rank should end with (rank r's fp32 slot of each, to be written into its master)."""
    working = [torch.zeros(s, dtype=torch.bfloat16) for s in shapes]
    padded = {w: colossalai_layout(w, world) for w in working}
    full = [torch.randn(p.numel(), generator=torch.Generator().manual_seed(i)) for i, p in enumerate(padded.values())]
    slots = [f.chunk(world)[rank].clone() for f in full]
    fake = types.SimpleNamespace(
        _working_param_to_padded_working_param=padded, param_to_pg={w: dist.group.WORLD for w in working},
        pid_to_bucket_store={id(w): types.SimpleNamespace(local_rank=rank, world_size=world) for w in working})
    return working, full, slots, fake


def assert_complete(working, full, rank: int) -> None:
    for w, f in zip(working, full):
        expected = f[:w.numel()].to(torch.bfloat16).view(w.shape)
        assert torch.equal(w, expected), (rank, w, expected)


def check_publish(rank: int, world: int) -> None:
    working, full, masters, fake = setup([(5, 3), (4, 4), (7,)], rank, world)
    zero_step.publish_working_params(fake, [(w, m, None) for w, m in zip(working, masters)])
    assert_complete(working, full, rank)
    print(f"rank {rank}: published OK", flush=True)


def check_pipelined(rank: int, world: int, chunk_numel: int, expected_events: list[str]) -> None:
    # per-rank shards of 8, 8, 4 and 9 elements
    working, full, targets, fake = setup([(5, 3), (4, 4), (7,), (9, 2)], rank, world)
    masters = [torch.zeros_like(t) for t in targets]
    events = []
    real_gather = dist.all_gather_into_tensor

    def logged_gather(out, inp, group=None, async_op=False):
        events.append("gather")
        return real_gather(out, inp, group=group, async_op=async_op)

    def update(chunk):  # the Adam pass's stand-in: the chunk's masters take their new values
        events.append(f"update {len(chunk)}")
        for _, master, target in chunk:
            master.copy_(target)

    dist.all_gather_into_tensor = logged_gather
    try:
        zero_step.update_and_publish(fake, list(zip(working, masters, targets)), update, chunk_numel)
    finally:
        dist.all_gather_into_tensor = real_gather
    assert events == expected_events, (chunk_numel, events)
    assert_complete(working, full, rank)
    print(f"rank {rank}: chunks of {chunk_numel} OK", flush=True)


def main() -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    check_publish(rank, world)
    # chunks of >= 8 elements: [p0], [p1], [p2, p3], each gathered before the next is updated
    check_pipelined(rank, world, 8, ["update 1", "gather", "update 1", "gather", "update 2", "gather", "gather"])
    # 0: the library's order, everything updated, then gathered
    check_pipelined(rank, world, 0, ["update 4", "gather", "gather", "gather", "gather"])
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
