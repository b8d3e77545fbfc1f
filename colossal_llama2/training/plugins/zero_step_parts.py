"""What zero2's replacement steps share (``zero_step.fused_zero_step`` on the GPU, ``zero_offload.offload_step``
with the states in host memory): the gradient norm in fp32, the factor the gradients are divided by, the part of
the library's step that comes before the update, and where a master shard's cast goes in its working weight."""
from __future__ import annotations

import math

import torch
import torch.distributed as dist


def grad_norm_fp32(self, dp_pg, gradients, norm_type=2):
    """LowLevelZeroOptimizer._compute_grad_norm for the 2-norm: the global norm over ``dp_pg`` (a float)."""
    if len(gradients) == 0:
        return 0.0
    if float(norm_type) != 2.0:
        return type(self)._compute_grad_norm(self, dp_pg, gradients, norm_type)
    per_tensor = torch._foreach_norm(gradients, 2.0, dtype=torch.float32)
    squared = torch.linalg.vector_norm(torch.stack(per_tensor)).square().reshape(1)
    for group in (dp_pg if isinstance(dp_pg, tuple) else (dp_pg,)):
        dist.all_reduce(squared, op=dist.ReduceOp.SUM, group=group)
    return math.sqrt(squared.item())


def grad_div_scale(self, total_norm: float) -> float:
    """What the gradients must be divided by: the loss scale (fp16) times the clipping factor, as the library."""
    div_scale = 1.0
    if self.mixed_precision_mixin is not None:
        div_scale = self.mixed_precision_mixin.get_grad_div_scale()
    if self._clip_grad_norm > 0.0:
        clip = ((total_norm / div_scale) + 1e-6) / self._clip_grad_norm
        if clip > 1:
            div_scale = clip * div_scale
    return div_scale


def begin_step(self, closure=None) -> float | None:
    """What the library's step does before the update: nothing without gradient sync (None), the skip of an
    overflowed fp16 step (None); else the global gradient norm (kept for the logs) and the factor the gradients
    must be divided by."""
    assert closure is None, "closure is not supported by step()"
    if not self.require_grad_sync:
        return None
    if self.mixed_precision_mixin is not None and self.mixed_precision_mixin.should_skip_step():
        self.zero_grad()
        return None
    from colossalai.zero.low_level._utils import calculate_global_norm_from_list

    norms = [sum(self._compute_grad_norm(dp_pg=store.torch_pg, gradients=store.get_working_grads_by_group_id(group_id))
                 for store in self.pg_to_grad_store.values()) for group_id in range(self.num_param_groups)]
    self._current_grad_norm = calculate_global_norm_from_list(norm_list=norms)
    return grad_div_scale(self, self._current_grad_norm)


def params_with_grads(self, group_id: int) -> list[tuple]:
    """(working param, its fp32 master shard, this rank's gradient shard) for each param that got a gradient
    (a layer that did not run has none and is not updated, as in the library)."""
    triples = []
    for working, master in zip(self._working_param_groups[group_id], self._master_param_groups_of_current_rank[group_id]):
        store = self.pid_to_grad_store[id(working)]
        grads = store.get_partitioned_gradients_by_param_id(group_id, id(working))
        if grads:
            triples.append((working, master, grads[0 if self._partition_grads else store.local_rank]))
    return triples


def working_slot(self, working, master) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The padded working weight, this rank's slot in it (where ``master``'s cast goes) and the gather's size."""
    padded = self._working_param_to_padded_working_param[working]
    if padded.data_ptr() != working.data_ptr():
        raise RuntimeError("zero2 --zero_step fast: a working parameter no longer shares storage with its "
                           "padded buffer (was its .data replaced?); use --zero_step library")
    store = self.pid_to_bucket_store[id(working)]
    return padded, padded[store.local_rank * master.numel():(store.local_rank + 1) * master.numel()], store.world_size
