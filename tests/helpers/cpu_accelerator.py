"""colossalai's CPU accelerator as the tensor-parallel CPU tests need it."""
from __future__ import annotations

import torch


def patch_rng_calls() -> None:
    """colossalai 0.5.0's CpuAccelerator: ``get_rng_state`` and ``manual_seed`` do not take the arguments the
    shardformer layers pass them (a device; a seed to set); torch's CPU generator answers instead."""
    from colossalai.accelerator.cpu_accelerator import CpuAccelerator

    CpuAccelerator.get_rng_state = lambda self, device=None: torch.get_rng_state()
    CpuAccelerator.manual_seed = lambda self, seed: torch.manual_seed(seed)
