"""Optimizer and learning-rate schedule: AdamW (betas 0.9/0.95), linear warmup then cosine decay.

``--optimizer`` picks how the AdamW states are kept (torchao's optimizers for the low-memory ones):

    adamw       fp32 master weights, fp32 Adam states       12 bytes per parameter, sharded by zero2
    adamw_bf16  bf16 weights updated in place with           4 bytes (bf16 states)
                stochastic rounding, bf16 Adam states
    adamw8bit   the same, Adam states in 8 bits              2 bytes (+ one fp32 scale per 256 values)
                (block-wise quantised)

The bf16 weights plus their gradients (2 + 2 bytes) come on top of each. Stochastic rounding keeps updates
much smaller than a bf16 ulp from being rounded away (the reason fp32 master weights exist), so the fp32
master copy can go; torchao's ``bf16_stochastic_round``.
"""
from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass

import torch

from ..utils.errors import UserInputError

MIN_LR_RATIO = 0.1  # cosine decays to 10% of the peak learning rate, as in LLaMA-2's recipe
OPTIMIZERS = ("adamw", "adamw_bf16", "adamw8bit")
LOW_MEMORY_PLUGINS = ("zero2", "ddp")  # LowLevelZero (and DDP) take any torch optimizer; gemini needs HybridAdam
BETAS = (0.9, 0.95)
EPS = 1e-8


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only; norms and biases (1-D) are not decayed. Frozen params are left out."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def check_optimizer(optimizer: str, *, plugin: str, precision: str) -> None:
    """Raise UserInputError, naming --optimizer, for a low-memory optimizer that cannot run with these flags."""
    if optimizer == "adamw":
        return
    if plugin not in LOW_MEMORY_PLUGINS:
        raise UserInputError(f"--optimizer {optimizer} works with --plugin {' or '.join(LOW_MEMORY_PLUGINS)} (gemini "
                             f"and the offload plugins keep their own fp32 Adam), not {plugin}", where="--optimizer")
    if plugin == "zero2" and precision != "bf16":
        raise UserInputError(f"--optimizer {optimizer} updates bf16 weights without fp32 master copies: it needs "
                             f"--mixed_precision bf16 (got {precision})", where="--optimizer")
    if importlib.util.find_spec("torchao") is None:
        raise UserInputError(f"--optimizer {optimizer} needs torchao (pip install -e .[gpu])", where="--optimizer")


def keeps_master_weights(optimizer: str) -> bool:
    """Whether zero2 keeps fp32 master weights for this optimizer (the low-memory ones round stochastically)."""
    return optimizer == "adamw"


def make_optimizer(model: torch.nn.Module, *, lr: float, weight_decay: float, use_hybrid_adam: bool,
                   kind: str = "adamw"):
    """HybridAdam for the Colossal-AI GPU plugins; torch AdamW for ddp (HybridAdam's CPU path JIT-compiles);
    torchao's AdamW with bf16 stochastic rounding (and 8-bit states) for the low-memory kinds."""
    groups = param_groups(model, weight_decay)
    if kind != "adamw":
        import torchao.optim

        cls = torchao.optim.AdamW8bit if kind == "adamw8bit" else torchao.optim._AdamW
        return cls(groups, lr=lr, betas=BETAS, eps=EPS, weight_decay=weight_decay, bf16_stochastic_round=True)
    if use_hybrid_adam:
        from colossalai.nn.optimizer import HybridAdam

        return HybridAdam(groups, lr=lr, betas=BETAS, eps=EPS, weight_decay=weight_decay, adamw_mode=True)
    # fused: one kernel for all parameters on CUDA (the default foreach path launches several per group)
    fused = all(p.is_cuda for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=lr, betas=BETAS, eps=EPS, weight_decay=weight_decay, fused=fused or None)


def default_warmup_steps(total_steps: int) -> int:
    return max(1, math.ceil(0.025 * total_steps)) if total_steps > 0 else 0


@dataclass(frozen=True)
class StepPlan:
    """How many optimizer steps the run makes, from the data, the batch settings and --max_steps."""
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int

    @classmethod
    def make(cls, samples_per_rank: int, *, micro_batch_size: int, accumulation_steps: int, num_epochs: int,
             max_steps: int, warmup_steps: int | None) -> "StepPlan":
        micro_batches_per_epoch = math.ceil(samples_per_rank / micro_batch_size)
        steps_per_epoch = math.ceil(micro_batches_per_epoch / accumulation_steps)
        total = steps_per_epoch * num_epochs
        if max_steps:
            total = min(total, max_steps)
        warmup = warmup_steps if warmup_steps is not None else default_warmup_steps(total)
        return cls(steps_per_epoch=steps_per_epoch, total_steps=total, warmup_steps=warmup)


class WarmupCosine:
    """lr factor for optimizer step ``s`` (0-based): linear warmup to 1, then cosine down to MIN_LR_RATIO.

    A class, not a closure, so LambdaLR's state_dict stores its settings with the checkpoint.
    """

    def __init__(self, warmup_steps: int, total_steps: int, min_ratio: float = MIN_LR_RATIO):
        self.warmup_steps = warmup_steps
        self.total_steps = max(total_steps, 1)
        self.min_ratio = min_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def make_scheduler(optimizer, *, warmup_steps: int, total_steps: int):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(warmup_steps, total_steps))
