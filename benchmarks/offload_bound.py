"""The bound of an optimizer step offloaded to the host (``--plugin zero2_cpu``): what one step must spend on the
host's Adam and on PCIe, measured here for a model shape, so the plugin's step time can be held against it.

Per step, zero2_cpu must (1) copy the bf16 gradient shard to the host, (2) run Adam over the fp32 master
weights and states there, (3) copy the updated bf16 weights back. Each part is timed on a chunk of
``--chunk_m`` million elements and scaled to the model's parameter count (all three are linear in it):

- host Adam: colossalai's CPU Adam kernel (what zero2_cpu's HybridAdam runs on the host), fp32 weights, gradients
  and states, at this machine's thread count; torch's own ops where the kernel cannot be built (reported);
- PCIe: bf16 device-to-host and host-to-device copies from and into pinned host memory (what a pipelined step can
  use) and from and into ordinary (pageable) memory (what a plain ``.to("cpu")`` uses).

The serial bound is the sum of the three (pinned); the overlapped bound, their maximum (copies of one chunk running
while another is updated). The pipelined step (training/plugins/zero_offload.py) moves fp32 both ways, twice these bytes,
so that the host does no casts (colossalai's CPU kernel reads fp32 or fp16 gradients, not bf16): at 7b on one H200
that is ~0.5 s each way, still well under the host's Adam. Add the forward and backward time of a zero2 step of the same shape (train_benchmark.py)
for the step's bound.

    python benchmarks/offload_bound.py --shape 7b            # on the GPU machine; writes offload_bound.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.train_benchmark import SHAPES, model_config  # noqa: E402
from colossal_llama2.training.plugins.choice import ModelShape  # noqa: E402


def median_seconds(fn, repeats: int, sync=lambda: None) -> float:
    fn()  # warm-up
    sync()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def host_adam_step(n: int):
    """One Adam step over ``n`` fp32 elements on the host, and the name of what runs it."""
    import torch

    master, grad = torch.randn(n), torch.randn(n) * 1e-3
    exp_avg, exp_avg_sq = torch.zeros(n), torch.zeros(n)
    try:
        from colossalai.kernel.kernel_loader import CPUAdamLoader

        kernel = CPUAdamLoader().load().CPUAdamOptimizer(1e-4, 0.9, 0.95, 1e-8, 0.0, True)
        step = [0]

        def run():
            step[0] += 1
            kernel.step(step[0], 1e-4, 0.9, 0.95, 1e-8, 0.0, True, master, grad, exp_avg, exp_avg_sq, -1)
        return run, "colossalai CPU Adam kernel"
    except Exception as err:  # no compiler, or no colossalai: the same arithmetic in torch ops
        print(f"colossalai's CPU Adam kernel is unavailable ({type(err).__name__}: {err}); timing torch ops",
              flush=True)
        step = [0]

        def run():
            step[0] += 1
            torch._fused_adamw_([master], [grad], [exp_avg], [exp_avg_sq], [], [torch.tensor(float(step[0]))],
                                amsgrad=False, lr=1e-4, beta1=0.9, beta2=0.95, weight_decay=0.0, eps=1e-8,
                                maximize=False)
        return run, "torch fused AdamW (CPU)"


def copy_seconds(n: int, repeats: int) -> dict[str, float]:
    """bf16 device<->host copies of ``n`` elements, pinned and pageable; empty without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return {}
    device = torch.empty(n, dtype=torch.bfloat16, device="cuda")
    out = {}
    for kind, host in (("pinned", torch.empty(n, dtype=torch.bfloat16, pin_memory=True)),
                       ("pageable", torch.empty(n, dtype=torch.bfloat16))):
        out[f"d2h_{kind}"] = median_seconds(lambda: host.copy_(device, non_blocking=kind == "pinned"), repeats,
                                            torch.cuda.synchronize)
        out[f"h2d_{kind}"] = median_seconds(lambda: device.copy_(host, non_blocking=kind == "pinned"), repeats,
                                            torch.cuda.synchronize)
    return out


def bound(params: int, chunk: int, repeats: int) -> dict:
    import torch

    run, adam_kind = host_adam_step(chunk)
    scale = params / chunk
    parts = {"host_adam": median_seconds(run, repeats) * scale}
    parts.update({k: v * scale for k, v in copy_seconds(chunk, repeats).items()})
    result = {"params": params, "chunk_elements": chunk, "host_threads": torch.get_num_threads(),
              "host_adam_kernel": adam_kind, "seconds": {k: round(v, 3) for k, v in parts.items()}}
    serial = [parts["host_adam"]] + [parts[k] for k in ("d2h_pinned", "h2d_pinned") if k in parts]
    result["serial_bound_s"] = round(sum(serial), 3)
    result["overlapped_bound_s"] = round(max(serial), 3)
    return result


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", default="7b", choices=SHAPES, help="model shape (train_benchmark.py's) whose parameter "
                                                                 "count the parts are scaled to")
    p.add_argument("--chunk_m", type=float, default=256, help="elements timed per part, in millions")
    p.add_argument("--repeats", type=int, default=5, help="timed repetitions per part (the median is kept)")
    p.add_argument("--out", type=Path, default=Path("offload_bound.json"), help="where the result is written")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    params = ModelShape.of(model_config(args.shape, 4096)).params
    result = {"shape": args.shape, **bound(params, max(1, int(args.chunk_m * 1e6)), args.repeats)}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
