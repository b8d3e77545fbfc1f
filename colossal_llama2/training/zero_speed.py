"""zero2's optimizer step without two passes over the gradients that do nothing useful.

Profiled on one H200 (7b's layers, 8 deep, docs/benchmarks.md), colossalai 0.5.0's LowLevelZeroOptimizer
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
"""
from __future__ import annotations

import math
import types

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


def unscale_and_clip_grads(self, grad_groups_flat, total_norm):
    """LowLevelZeroOptimizer._unscale_and_clip_grads: the division goes to the Adam kernel (``self.optim.step``
    patched by ``speed_up_zero_optimizer``) or is one foreach pass, skipped when the factor is 1."""
    div_scale = 1.0
    if self.mixed_precision_mixin is not None:
        div_scale = self.mixed_precision_mixin.get_grad_div_scale()
    if self._clip_grad_norm > 0.0:
        clip = ((total_norm / div_scale) + 1e-6) / self._clip_grad_norm
        if clip > 1:
            div_scale = clip * div_scale
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


def speed_up_zero_optimizer(optimizer) -> str | None:
    """Install both on a boosted LowLevelZeroOptimizer (the Booster's OptimizerWrapper or the optimizer);
    returns what was installed, for the log, or None when ``optimizer`` is not one."""
    from colossalai.zero.low_level.low_level_optim import LowLevelZeroOptimizer

    inner = optimizer if isinstance(optimizer, LowLevelZeroOptimizer) else getattr(optimizer, "optim", None)
    if not isinstance(inner, LowLevelZeroOptimizer):
        return None
    from colossalai.nn.optimizer import HybridAdam

    inner._compute_grad_norm = types.MethodType(grad_norm_fp32, inner)
    inner._unscale_and_clip_grads = types.MethodType(unscale_and_clip_grads, inner)
    # Only the all-on-GPU path: HybridAdam's CPU path ignores div_scale for bf16 gradients.
    if type(inner.optim) is HybridAdam and not inner._cpu_offload:
        inner._adam_divides = True
        inner.optim.step = _adam_step_with_div_scale(inner, inner.optim)
        return "gradient norm in fp32 with foreach kernels, clipping inside the Adam kernel"
    return "gradient norm in fp32 with foreach kernels, clipping as one foreach multiplication (skipped at 1)"
