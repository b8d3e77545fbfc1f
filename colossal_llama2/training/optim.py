"""Optimizer and learning-rate schedule: AdamW (betas 0.9/0.95), linear warmup then cosine decay."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

MIN_LR_RATIO = 0.1  # cosine decays to 10% of the peak learning rate, as in LLaMA-2's recipe


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


def make_optimizer(model: torch.nn.Module, *, lr: float, weight_decay: float, use_hybrid_adam: bool):
    """HybridAdam for the Colossal-AI GPU plugins; torch AdamW for ddp (HybridAdam's CPU path JIT-compiles)."""
    groups = param_groups(model, weight_decay)
    if use_hybrid_adam:
        from colossalai.nn.optimizer import HybridAdam

        return HybridAdam(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=weight_decay, adamw_mode=True)
    # fused: one kernel for all parameters on CUDA (the default foreach path launches several per group)
    fused = all(p.is_cuda for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=weight_decay,
                             fused=fused or None)


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
