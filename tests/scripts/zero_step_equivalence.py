"""On GPUs (1 or 2 ranks): zero_reduction's gradient reduction (NCCL's averaging reduce-scatter on 2 ranks)
followed by zero_step's fused step update master weights, Adam states and the bf16 working weights as
colossalai's own LowLevelZeroOptimizer reduction and step do, over three steps with clipping active and two
parameter groups (weight decay on one), with layer sizes that 2 ranks must pad.

The gradients do not depend on the weights (the loss is linear in them: sum(p * c) with a fresh random c
each step), so one rounding difference in a weight cannot change the next step's gradients: both steps see
identical gradients every step, and whatever differs beyond rounding is the step itself. (With a loss that
depends on the weights, one fp32 ulp that flips a bf16 rounding changes the next gradients at the 1e-3 level,
measured on an H200, which would hide a real defect of that size.) Prints the largest differences, per tensor
relative to its largest magnitude, and "EQUIVALENT" when they are at rounding level (the library multiplies
the gradients by 1/s in fp32 where the Adam kernel divides them by s).

With ``--offload`` the same for ``cpu_offload`` (zero2_cpu): zero_offload's pipelined step, in chunks smaller
than a weight, against the library's, both running colossalai's CPU Adam kernel on host masters and states."""
from __future__ import annotations

import sys

import torch
import torch.distributed as dist

OFFLOAD = "--offload" in sys.argv[1:]


def build(fused: bool):
    from colossalai.nn.optimizer import HybridAdam
    from colossalai.zero import LowLevelZeroOptimizer

    from colossal_llama2.training.plugins import zero_step
    from colossal_llama2.training.plugins.zero_reduction import speed_up_zero_reduction
    from colossal_llama2.training.plugins.zero_step import speed_up_zero_optimizer

    # chunks of a few thousand elements: on 2 ranks the update and the gathers interleave over several chunks
    zero_step.PUBLISH_CHUNK_NUMEL = 4096

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 257), torch.nn.Linear(257, 33)).cuda().to(torch.bfloat16)
    adam = HybridAdam([{"params": list(model[0].parameters()), "weight_decay": 0.1},
                       {"params": list(model[1].parameters()), "weight_decay": 0.0}], lr=1e-2)
    optimizer = LowLevelZeroOptimizer(adam, partition_grad=True, overlap_communication=True, clip_grad_norm=0.05,
                                      cpu_offload=OFFLOAD)
    if fused:
        installed = speed_up_zero_optimizer(optimizer, offload_chunk_numel=4096)
        assert ("offloaded step pipelined" if OFFLOAD else "bf16 gradients straight into the Adam kernel") in installed
        assert "reduce-scattered with AVG" in speed_up_zero_reduction(optimizer)
    return model, optimizer


def run_steps(model, optimizer, device: str, steps: int = 3, state_keys=("exp_avg", "exp_avg_sq")):
    """``steps`` steps of a loss linear in the weights (fresh coefficients, seeded per rank, each step); returns
    the weights, the master weights, their optimizer states and the gradient norms."""
    gen = torch.Generator(device=device).manual_seed(100 + dist.get_rank())
    norms = []
    for _ in range(steps):
        coefficients = [torch.randn(p.shape, device=device, generator=gen).to(torch.bfloat16)
                        for p in model.parameters()]
        loss = sum((p.float() * c.float()).sum() for p, c in zip(model.parameters(), coefficients))
        optimizer.backward(loss)
        optimizer.step()
        norms.append(optimizer._current_grad_norm)
        optimizer.zero_grad()
    masters = [p for group in optimizer._master_param_groups_of_current_rank.values() for p in group]
    states = [optimizer.optim.state[p][key] for p in masters for key in state_keys]
    return [p.detach().clone() for p in model.parameters()], masters, states, norms


def train(fused: bool):
    return run_steps(*build(fused), "cuda")


def main() -> None:
    import colossalai

    colossalai.launch_from_torch(seed=0)
    initial = [p.detach().clone() for p in build(False)[0].parameters()]
    lib_w, lib_m, lib_s, lib_n = train(fused=False)
    new_w, new_m, new_s, new_n = train(fused=True)
    assert min(lib_n) > 0.05, f"clipping must act on every step: norms {lib_n}"
    for a, b in zip(lib_n, new_n):
        assert abs(a - b) <= 1e-5 * a, (lib_n, new_n)
    moved = max(float((w - w0).abs().max()) for w, w0 in zip(lib_w, initial))
    assert moved > 1e-2, "the weights must have moved"
    worst = {}
    for name, lib, new in (("master", lib_m, new_m), ("adam state", lib_s, new_s), ("working", lib_w, new_w)):
        worst[name] = max(float((a.float() - b.float()).abs().max() / a.float().abs().max().clamp_min(1e-30))
                          for a, b in zip(lib, new))
    assert all(m.device.type == ("cpu" if OFFLOAD else "cuda") for m in new_m)
    assert all(m.is_pinned() for m in new_m) == OFFLOAD, "the offloaded masters are page-locked for DMA"
    print(f"rank {dist.get_rank()}: largest difference / tensor scale {worst}; weights moved by up to {moved:.3g}",
          flush=True)
    # fp32 rounding for the fp32 tensors; a bf16 weight may round the other way (1 ulp: 2^-8 of its magnitude)
    for name, tol in (("master", 1e-6), ("adam state", 1e-6), ("working", 2 ** -7)):
        assert worst[name] <= tol, f"{name}: difference {worst[name]:.3g} of the tensor's scale > {tol}"
    print(f"rank {dist.get_rank()}: EQUIVALENT", flush=True)


if __name__ == "__main__":
    main()
