"""zero2's optimizer step without the passes over gradients and weights that do nothing useful.

Profiled on one H200 (7b's layers, 8 deep), colossalai 0.5.0's LowLevelZeroOptimizer
spends a large share of a step outside Adam itself:

* ``_compute_grad_norm`` copies every gradient to fp64 (``grad.double().norm()``), one kernel pair per
  parameter, to compute the norm for clipping. ``grad_norm_fp32`` uses ``torch._foreach_norm`` with fp32
  accumulation (what ``torch.nn.utils.clip_grad_norm_`` does): a few kernels, no copies.
* ``_unscale_and_clip_grads`` multiplies every gradient by ``1 / div_scale`` in a pass of its own, even when
  that is 1 (bf16, norm below the clip threshold). colossalai's fused GPU Adam kernel takes a ``div_scale``
  and divides each gradient as it reads it, so ``unscale_and_clip_grads`` hands the factor to the Adam step
  instead (all states on the GPU: zero2), or, with CPU offload, multiplies with one ``torch._foreach_mul_``
  and only when the factor is not 1.

Both replace methods on the optimizer instance only; the numbers are the library's (the norm accumulated in
fp32 instead of fp64: relative difference ~1e-7 on the reported grad norm; x / s instead of x * (1 / s)).
With the states in host memory (zero2_cpu), ``zero_offload.offload_step`` replaces the whole step.

With every state on the GPU (zero2), ``fused_zero_step`` replaces the whole step. The library's step copies
each gradient shard to fp32 (``grad.to(fp32)``: 6 bytes of memory traffic per parameter and a transient fp32
copy of all gradients), and afterwards casts each master shard to bf16 into a new tensor, copies it into a
gather bucket, all-gathers the bucket and copies the result back into the weights (about 18 bytes per
parameter even on one GPU). The step here hands the bf16 gradient shards straight to colossalai's fused Adam
kernel (it reads bf16 gradients with fp32 weights and states: the same arithmetic, as bf16 -> fp32 is exact),
casts every master shard into its slot of the weights with one ``torch._foreach_copy_``, and all-gathers each
weight in place. On several ranks it does that chunk by chunk (``update_and_publish``), so that the gathers of
one chunk run while the next chunk's Adam pass does, instead of after the whole update as in the library.
Profiled on one H200 (16 of 7b's layers), the optimizer phase was 61 ms of a 237 ms step; the fused step made
the whole step 1.20x faster and peak memory 14.2 GiB lower there.
tests/scripts/zero_step_equivalence.py compares it with the library's step on the same gradients.
"""
from __future__ import annotations

import types

import torch
import torch.distributed as dist

from .zero_offload import install_offload_step
from .zero_step_parts import begin_step, grad_div_scale, grad_norm_fp32, params_with_grads, working_slot


def unscale_and_clip_grads(self, grad_groups_flat, total_norm):
    """LowLevelZeroOptimizer._unscale_and_clip_grads: the division goes to the Adam kernel (``self.optim.step``
    patched by ``speed_up_zero_optimizer``) or is one foreach pass, skipped when the factor is 1."""
    div_scale = grad_div_scale(self, total_norm)
    if getattr(self, "_adam_divides", False):
        self._pending_div_scale = div_scale
    elif div_scale != 1.0 and grad_groups_flat:
        torch._foreach_mul_([g.data for g in grad_groups_flat], 1.0 / div_scale)


def _adam_step_with_div_scale(zero_optimizer, adam):
    """HybridAdam.step dividing the gradients by the factor ``unscale_and_clip_grads`` left (-1: none)."""
    def step(closure=None):
        div_scale = getattr(zero_optimizer, "_pending_div_scale", 1.0)
        zero_optimizer._pending_div_scale = 1.0
        return type(adam).step(adam, closure, div_scale=div_scale if div_scale != 1.0 else -1)
    return step


def fused_zero_step(self, closure=None):
    """LowLevelZeroOptimizer.step with master weights, Adam states and gradients on the GPU (see the module
    docstring): the library's numbers without its copies."""
    div_scale = begin_step(self, closure)
    if div_scale is None:
        return
    groups = [params_with_grads(self, group_id) for group_id in range(self.num_param_groups)]
    for group_id, triples in enumerate(groups):
        group = self.optim.param_groups[group_id]
        update_and_publish(self, triples, lambda chunk: adam_update(self.optim, group, chunk, div_scale),
                           getattr(self, "_gather_chunk_numel", None))


def adam_update(adam, group: dict, triples: list[tuple], div_scale: float) -> None:
    """HybridAdam's GPU update of the master shards, fed the working-precision gradients directly."""
    if not triples:
        return
    from colossalai.utils import multi_tensor_applier

    for _, master, _ in triples:
        state = adam.state[master]
        if len(state) == 0:  # HybridAdam's own state layout, so its checkpoints load either way
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(master)
            state["exp_avg_sq"] = torch.zeros_like(master)
        state["step"] += 1
    beta1, beta2 = group["betas"]
    by_grad_dtype: dict[torch.dtype, list[tuple]] = {}  # the kernel reads every gradient of a launch as one dtype
    for triple in triples:
        by_grad_dtype.setdefault(triple[2].dtype, []).append(triple)
    for same in by_grad_dtype.values():
        states = [adam.state[master] for _, master, _ in same]
        multi_tensor_applier(adam.gpu_adam_op, adam._dummy_overflow_buf,
                             [[grad for *_, grad in same], [master for _, master, _ in same],
                              [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states]],
                             group["lr"], beta1, beta2, group["eps"], states[-1]["step"], int(adam.adamw_mode),
                             int(group["bias_correction"]), group["weight_decay"],
                             div_scale if div_scale != 1.0 else -1)


# Master-shard elements per chunk of update_and_publish: at 7b over 2 ranks about 50 chunks, each an Adam pass
# of ~0.5 ms on an H200 against a gather of about the same length, so both streams stay busy.
PUBLISH_CHUNK_NUMEL = 64 << 20  # train.py --zero_gather_chunk_in_m 64


def update_and_publish(self, triples: list[tuple], update, chunk_numel: int | None = None) -> None:
    """``update(chunk)`` (the Adam pass) and the chunk's publication, chunk after chunk, with each chunk's
    all-gathers running on NCCL's stream while the next chunk is updated; all are waited for at the end (a
    stream wait on CUDA: the host does not block). The library gathers only after the whole update, so on
    several GPUs the gather's time (all weights' bytes over NVLink, ~20 ms per step at 7b on 2 GPUs) adds to
    the step. On one rank nothing is gathered and the update is one pass, as it is with ``chunk_numel`` 0 (the
    library's order); None: ``PUBLISH_CHUNK_NUMEL``."""
    if not triples:
        return
    if chunk_numel is None:
        chunk_numel = PUBLISH_CHUNK_NUMEL
    one_pass = chunk_numel == 0 or self.pid_to_bucket_store[id(triples[0][0])].world_size == 1
    pending = []
    for chunk in [triples] if one_pass else chunks_of(triples, chunk_numel):
        update(chunk)
        pending += start_publishing(self, chunk)
    for handle in pending:
        handle.wait()


def chunks_of(triples: list[tuple], chunk_numel: int) -> list[list[tuple]]:
    """Consecutive runs of (working, master, grad) triples, each closed once its masters reach ``chunk_numel``
    elements (a larger parameter is a chunk of its own)."""
    chunks, current, size = [], [], 0
    for triple in triples:
        current.append(triple)
        size += triple[1].numel()
        if size >= chunk_numel:
            chunks.append(current)
            current, size = [], 0
    return chunks + [current] if current else chunks


def publish_working_params(self, triples: list[tuple]) -> None:
    """Each updated master shard, cast, into this rank's slot of its working weight; then every weight
    all-gathered in place; returns when the weights are complete (on CUDA: for work queued after it)."""
    for handle in start_publishing(self, triples):
        handle.wait()


def start_publishing(self, triples: list[tuple]) -> list:
    """The cast copies, queued on the current stream, and each weight's in-place all-gather (NCCL's in-place
    form: the input is the output's own slot), started asynchronously: returns their handles."""
    slots, gathers = [], []
    for working, master, _ in triples:
        padded, slot, world_size = working_slot(self, working, master)
        slots.append(slot)
        if world_size > 1:
            gathers.append((padded, slot, self.param_to_pg[working]))
    if slots:  # (foreach kernels refuse empty lists)
        torch._foreach_copy_(slots, [master for _, master, _ in triples])
    return [dist.all_gather_into_tensor(padded, slot, group=pg, async_op=True) for padded, slot, pg in gathers]


def speed_up_zero_optimizer(optimizer, gather_chunk_numel: int | None = None,
                            offload_chunk_numel: int | None = None) -> str | None:
    """Install both on a boosted LowLevelZeroOptimizer (the Booster's OptimizerWrapper or the optimizer);
    returns what was installed, for the log, or None when ``optimizer`` is not one. ``gather_chunk_numel``:
    the fused step's chunk (``update_and_publish``); ``offload_chunk_numel``: the offloaded step's
    (``zero_offload.offload_step``)."""
    from colossalai.zero.low_level.low_level_optim import LowLevelZeroOptimizer


    inner = optimizer if isinstance(optimizer, LowLevelZeroOptimizer) else getattr(optimizer, "optim", None)
    if not isinstance(inner, LowLevelZeroOptimizer):
        return None
    from colossalai.nn.optimizer import HybridAdam

    inner._compute_grad_norm = types.MethodType(grad_norm_fp32, inner)
    inner._unscale_and_clip_grads = types.MethodType(unscale_and_clip_grads, inner)
    offloaded = install_offload_step(inner, offload_chunk_numel)
    if offloaded:
        return f"gradient norm in fp32 with foreach kernels; {offloaded}"
    if (type(inner.optim) is HybridAdam and not inner._cpu_offload and inner._master_weights
            and getattr(inner.optim, "offloader", None) is None and not inner._overlap_allgather
            and not inner._fp8_communication and len(inner.pg_to_grad_store) == 1):
        inner.step = types.MethodType(fused_zero_step, inner)
        inner._gather_chunk_numel = gather_chunk_numel
        return ("gradient norm in fp32 with foreach kernels; bf16 gradients straight into the Adam kernel, which "
                "also clips; weights written in place (no fp32 gradient copies, no gather buckets)")
    # Only the all-on-GPU path: HybridAdam's CPU path ignores div_scale for bf16 gradients.
    if type(inner.optim) is HybridAdam and not inner._cpu_offload:
        inner._adam_divides = True
        inner.optim.step = _adam_step_with_div_scale(inner, inner.optim)
        return "gradient norm in fp32 with foreach kernels, clipping inside the Adam kernel"
    return "gradient norm in fp32 with foreach kernels, clipping as one foreach multiplication (skipped at 1)"
