"""zero2's gradient reduction without the passes colossalai 0.5.0 adds around the reduce-scatter.

For each bucket of gradients (``--reduce_bucket_size_in_m``), ``LowLevelZeroOptimizer._run_reduction``
1. concatenates the gradients into one flat buffer, on the compute stream;
2. divides that buffer by the number of ranks, a pass of its own, also on the compute stream;
3. reduce-scatters it (sum) on the communication stream, into a new buffer whose views become this rank's
   gradient shards (``sync_tensor`` rebinds them; the full gradients are freed then).

``reduce_buckets`` does 1 on the communication stream, so the compute stream no longer spends a pass on it;
folds 2 into the collective (``ReduceOp.AVG``); and on a single rank skips 3, where a reduce-scatter is a
copy of the whole bucket. Same numbers: with a power-of-two number of ranks, dividing before or after the sum
rounds identically (tests/scripts/zero_reduction_equivalence.py and zero_step_equivalence.py compare it with
the library). On several GPUs what it saves is the division pass on the compute stream and the concatenation
moved off it, 4 bytes of memory traffic per parameter each; on one GPU also the collective's copy.
"""
from __future__ import annotations

import types

import torch
import torch.distributed as dist


def reduce_buckets(self) -> None:
    """LowLevelZeroOptimizer._run_reduction for partitioned gradients (zero2) over one process group per
    bucket store (see the module docstring)."""
    from colossalai.accelerator import get_accelerator

    accelerator = get_accelerator()
    for bucket_store in self.pg_to_bucket_store.values():
        if bucket_store.num_elements_in_bucket() <= 0:
            continue
        bucket_store.build_grad_in_bucket()  # splits each gradient by rank (views) and sets param.grad = None
        bucket_store.reset_num_elements_in_bucket()
        by_rank = bucket_store.get_grad()
        pieces = [grad for rank in range(bucket_store.world_size) for grad in by_rank[rank]]
        compute = accelerator.current_stream()
        stream = bucket_store.comm_stream if self._overlap_communication else compute
        if stream is not compute:
            stream.wait_stream(compute)  # the gradients were written on the compute stream
        with accelerator.stream(stream):
            if stream is not compute and pieces[0].is_cuda:
                # Read on this stream after the compute stream's allocator may have taken them back.
                for grad in pieces:
                    grad.record_stream(stream)
            shard = reduced_shard(torch.cat([grad.reshape(-1) for grad in pieces]), bucket_store)
            offset = 0
            for grad in by_rank[bucket_store.local_rank]:
                param_id = bucket_store.get_param_id_of_grad(grad)
                self._add_grad(shard[offset:offset + grad.numel()], 1, bucket_store.current_group_id, param_id)
                offset += grad.numel()
        bucket_store.reset()


def reduced_shard(flat: torch.Tensor, bucket_store) -> torch.Tensor:
    """This rank's part of the ranks' mean of ``flat`` (laid out rank by rank): one collective, no extra pass."""
    if bucket_store.world_size == 1:
        return flat
    shard = torch.empty(flat.numel() // bucket_store.world_size, dtype=flat.dtype, device=flat.device)
    dist.reduce_scatter_tensor(shard, flat, op=dist.ReduceOp.AVG, group=bucket_store.torch_pg)
    return shard


def speed_up_zero_reduction(optimizer) -> str | None:
    """Install ``reduce_buckets`` on a boosted LowLevelZeroOptimizer (or the Booster's wrapper of one) that
    partitions its gradients over a single process group in their own dtype; returns what was installed, for
    the log, or None where the library's reduction stays (zero1, fp8 or another communication dtype, MoE's
    several groups)."""
    from colossalai.zero.low_level.low_level_optim import LowLevelZeroOptimizer

    inner = optimizer if isinstance(optimizer, LowLevelZeroOptimizer) else getattr(optimizer, "optim", None)
    if not isinstance(inner, LowLevelZeroOptimizer) or not inner._partition_grads or inner._fp8_communication:
        return None
    if inner._communication_dtype is not None or len(inner.pg_to_bucket_store) != 1:
        return None
    if any(len(store.sizes) != 1 for store in inner.pg_to_bucket_store.values()):
        return None
    inner._run_reduction = types.MethodType(reduce_buckets, inner)
    return ("gradient buckets concatenated on the communication stream and reduce-scattered with AVG; the shards "
            "are the collective's output (no division pass, no copy back, full gradients freed per bucket)")
