"""Two gloo ranks, on CPU: zero_reduction.reduce_buckets leaves each rank the same bf16 gradient shards as
colossalai's own LowLevelZeroOptimizer._run_reduction, over two accumulated backward passes, with buckets
smaller than one weight, layers that 2 ranks must pad, and the communication stream on; the optimizer steps
that follow agree to the bit. As the library's, its shards are views of each bucket's reduced part: the full
gradients are not kept.

LowLevelZeroOptimizer refuses to start without a GPU; its CPU accelerator only lacks streams, which this
script stands in for (a stream that orders nothing: on CPU every operation is done when it returns)."""
from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist

BUCKET = 200  # elements: the first weight (13 x 37) does not fit in one bucket


class _Stream:
    def wait_stream(self, other) -> None:
        pass


def allow_cpu() -> None:
    from colossalai.accelerator.cpu_accelerator import CpuAccelerator
    from colossalai.zero.low_level.low_level_optim import LowLevelZeroOptimizer

    LowLevelZeroOptimizer._sanity_checks = lambda self: None
    CpuAccelerator.Stream = lambda self, *args, **kwargs: _Stream()
    CpuAccelerator.current_stream = lambda self, *args, **kwargs: _Stream()
    CpuAccelerator.stream = lambda self, stream: contextlib.nullcontext()
    CpuAccelerator.synchronize = lambda self, *args, **kwargs: None


def train(fast: bool):
    from colossalai.zero.low_level.low_level_optim import LowLevelZeroOptimizer

    from colossal_llama2.training.plugins.zero_reduction import speed_up_zero_reduction

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(13, 37), torch.nn.GELU(), torch.nn.Linear(37, 5)).to(torch.bfloat16)
    # The library's own path only on the compute stream: it records its buffer on the communication stream,
    # which a CPU tensor cannot do; the fast path is run with the communication stream on.
    optimizer = LowLevelZeroOptimizer(torch.optim.Adam(model.parameters(), lr=1e-2), partition_grad=True,
                                      overlap_communication=fast, reduce_bucket_size=BUCKET)
    if fast:
        assert "reduce-scattered with AVG" in speed_up_zero_reduction(optimizer)
    gen = torch.Generator().manual_seed(10 + dist.get_rank())
    for _ in range(2):  # accumulated: the second pass adds into the shards the first one left
        inputs = torch.randn(6, 13, generator=gen).to(torch.bfloat16)
        optimizer.backward(model(inputs).float().square().mean())
    assert all(p.grad is None for p in model.parameters())
    shards = [optimizer.pid_to_grad_store[id(p)].get_partitioned_gradients_by_param_id(0, id(p)) for p in model.parameters()]
    assert all(len(s) == 1 for s in shards), [len(s) for s in shards]
    shards = [s[0] for s in shards]
    storage = [s.untyped_storage().nbytes() // s.element_size() for s in shards]
    grads = [s.clone() for s in shards]
    optimizer.step()
    return grads, storage, [p.detach().clone() for p in model.parameters()], model


def main() -> None:
    import colossalai

    allow_cpu()
    colossalai.launch_from_torch(backend="gloo", seed=0)
    rank, world = dist.get_rank(), dist.get_world_size()
    lib_grads, lib_storage, lib_weights, model = train(fast=False)
    new_grads, new_storage, new_weights, _ = train(fast=True)
    assert max(float(g.abs().max()) for g in lib_grads) > 0, "the gradients must not be zero"
    for name, a, b in zip([n for n, _ in model.named_parameters()], lib_grads, new_grads):
        assert a.dtype == b.dtype == torch.bfloat16 and torch.equal(a, b), (rank, name, (a.float() - b.float()).abs().max())
    for name, a, b in zip([n for n, _ in model.named_parameters()], lib_weights, new_weights):
        assert torch.equal(a, b), (rank, name)
    full = [-(-p.numel() // world) * world for p in model.parameters()]  # padded gradient sizes
    # Each shard a view of its bucket's 1/world part (the first weight is a bucket of its own), not of a whole
    # gradient, in both.
    assert new_storage == lib_storage, (lib_storage, new_storage)
    assert all(n <= max(BUCKET, f) // world for n, f in zip(new_storage, full)), (new_storage, full)
    assert new_storage[0] == full[0] // world, (new_storage, full)
    print(f"rank {rank}: EQUIVALENT, gradient storage {lib_storage} -> {new_storage} elements", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
