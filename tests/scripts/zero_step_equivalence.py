"""On GPUs (1 or 2 ranks): zero_speed's fused step leaves master weights, Adam states and the bf16 working
weights where colossalai's own LowLevelZeroOptimizer.step leaves them, over three steps with clipping active
and two parameter groups (weight decay on one); layer sizes that 2 ranks must pad. Prints the largest
differences and "EQUIVALENT" when they are at rounding level (the library multiplies by 1/s in fp32 where
the Adam kernel divides by s)."""
from __future__ import annotations

import torch
import torch.distributed as dist


def build(fused: bool):
    from colossalai.nn.optimizer import HybridAdam
    from colossalai.zero import LowLevelZeroOptimizer

    from colossal_llama2.training.zero_speed import speed_up_zero_optimizer

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 257), torch.nn.GELU(), torch.nn.Linear(257, 33))
    model = model.cuda().to(torch.bfloat16)
    adam = HybridAdam([{"params": list(model[0].parameters()), "weight_decay": 0.1},
                       {"params": list(model[2].parameters()), "weight_decay": 0.0}], lr=1e-2)
    optimizer = LowLevelZeroOptimizer(adam, partition_grad=True, overlap_communication=True, clip_grad_norm=0.05)
    if fused:
        assert "bf16 gradients straight into the Adam kernel" in speed_up_zero_optimizer(optimizer)
    return model, optimizer


def train(fused: bool, steps: int = 3):
    model, optimizer = build(fused)
    gen = torch.Generator(device="cuda").manual_seed(100 + dist.get_rank())
    norms = []
    for _ in range(steps):
        x = torch.randn(16, 64, device="cuda", dtype=torch.bfloat16, generator=gen)
        loss = model(x).float().pow(2).mean()
        optimizer.backward(loss)
        optimizer.step()
        norms.append(optimizer._current_grad_norm)
        optimizer.zero_grad()
    masters = [p for group in optimizer._master_param_groups_of_current_rank.values() for p in group]
    states = [optimizer.optim.state[p][key] for p in masters for key in ("exp_avg", "exp_avg_sq")]
    return [p.detach().clone() for p in model.parameters()], masters, states, norms


def main() -> None:
    import colossalai

    colossalai.launch_from_torch(seed=0)
    initial = [p.detach().clone() for p in build(False)[0].parameters()]
    lib_w, lib_m, lib_s, lib_n = train(fused=False)
    new_w, new_m, new_s, new_n = train(fused=True)
    assert min(n for n in lib_n) > 0.05, f"clipping must act on every step: norms {lib_n}"
    for a, b in zip(lib_n, new_n):
        assert abs(a - b) <= 1e-5 * a, (lib_n, new_n)
    moved = max(float((w - w0).abs().max()) for w, w0 in zip(lib_w, initial))
    assert moved > 1e-3, "the weights must have moved"
    # Largest difference per tensor relative to the tensor's largest magnitude: an element near zero may
    # differ relatively much after a one-ulp difference in its update, which says nothing about the step.
    worst = {}
    for name, lib, new in (("master", lib_m, new_m), ("adam state", lib_s, new_s), ("working", lib_w, new_w)):
        worst[name] = max(float((a.float() - b.float()).abs().max() / a.float().abs().max().clamp_min(1e-30))
                          for a, b in zip(lib, new))
    print(f"rank {dist.get_rank()}: largest difference / tensor scale {worst}; weights moved by up to {moved:.3g}",
          flush=True)
    for name, tol in (("master", 1e-5), ("adam state", 1e-5), ("working", 1e-2)):
        assert worst[name] <= tol, f"{name}: difference {worst[name]:.3g} of the tensor's scale > {tol}"
    print(f"rank {dist.get_rank()}: EQUIVALENT", flush=True)


if __name__ == "__main__":
    main()
