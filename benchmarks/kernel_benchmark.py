#!/usr/bin/env python
"""Time the fused kernels of colossal_llama2.training.kernels.fused_ops (and compiled alternatives) against the eager
reference, on the GPU.

For every op at the `1b` training shapes (4096 tokens, hidden 2048, FFN 5376, 16 heads, vocab 69,104, bf16):
forward + backward, reported as
  * GPU ms: wall time per iteration of a synchronised loop (what the GPU needs when the CPU keeps up),
  * CPU ms: time to *issue* one iteration while the GPU is held busy by a long sleep kernel (the Python and
    launch overhead; when it exceeds the GPU time, the op is CPU-bound in a real step too). Few iterations,
    so that the launch queue never fills (that would block the host and count GPU time).

    python benchmarks/kernel_benchmark.py [--iters 50] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def gpu_ms(fn, iters: int) -> float:
    """Milliseconds per call of a synchronised loop after 3 warm-up calls (median of 5 loops of ``iters``)."""
    import torch

    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    gpu = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        torch.cuda.synchronize()
        gpu.append((time.perf_counter() - t0) / iters * 1e3)
    return statistics.median(gpu)


def _time(fn, iters: int) -> tuple[float, float]:
    import torch

    gpu = gpu_ms(fn, iters)
    cpu = []
    for _ in range(5):
        torch.cuda._sleep(int(2e9))  # ~1 s of GPU spin: the loop below only measures issuing work
        t0 = time.perf_counter()
        for _ in range(4):
            fn()
        cpu.append((time.perf_counter() - t0) / 4 * 1e3)
        torch.cuda.synchronize()
    return gpu, statistics.median(cpu)


def swiglu(gate, up):  # transformers' LlamaMLP activation
    import torch.nn.functional as F

    return F.silu(gate) * up


def rotary(q, k, cos, sin):  # transformers' apply_rotary_pos_emb
    import torch

    def rotate_half(t):
        return torch.cat((-t[..., t.shape[-1] // 2:], t[..., :t.shape[-1] // 2]), dim=-1)
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


# The 1b benchmark shape: one 4096-token sample, hidden 2048, FFN 5376, 16 heads, the extended vocabulary.
TOKENS, HIDDEN, FFN, HEADS, VOCAB = 4096, 2048, 5376, 16, 69_104


def make_inputs() -> SimpleNamespace:
    """bf16 leaf tensors of the 1b shapes (gradients accumulate on them), in HF's layouts."""
    import torch

    dev, bf16 = "cuda", torch.bfloat16
    torch.manual_seed(0)

    def leaf(*shape, scale=1.0):
        return (torch.randn(*shape, device=dev, dtype=bf16) * scale).requires_grad_()

    head_dim = HIDDEN // HEADS
    return SimpleNamespace(
        x=leaf(1, TOKENS, HIDDEN), w=leaf(HIDDEN), gate=leaf(1, TOKENS, FFN), up=leaf(1, TOKENS, FFN),
        q=leaf(1, TOKENS, HEADS, head_dim).transpose(1, 2),  # HF's layout: a transposed view
        k=leaf(1, TOKENS, HEADS, head_dim).transpose(1, 2),
        cos=torch.randn(1, TOKENS, head_dim, device=dev, dtype=bf16),
        sin=torch.randn(1, TOKENS, head_dim, device=dev, dtype=bf16),
        logits=leaf(TOKENS, VOCAB, scale=3.0), labels=torch.randint(0, VOCAB, (TOKENS,), device=dev))


def make_cases(t: SimpleNamespace) -> dict[str, dict]:
    """{op: {implementation: a function computing it}} over the inputs ``t``."""
    import torch
    import torch.nn.functional as F

    from colossal_llama2.training.kernels import fused_ops

    compiled = {f.__name__: torch.compile(f, fullgraph=True) for f in (fused_ops.rms_norm, swiglu, rotary)}
    native_rms = getattr(F, "rms_norm", None)
    return {
        "rms_norm": {
            "eager (HF)": lambda: fused_ops.rms_norm(t.x, t.w, 1e-5),
            "compiled": lambda: compiled["rms_norm"](t.x, t.w, 1e-5),
            **({"F.rms_norm (--fused_ops)": lambda: native_rms(t.x, (HIDDEN,), t.w, 1e-5)} if native_rms else {}),
        },
        "swiglu": {"eager (HF)": lambda: swiglu(t.gate, t.up), "compiled": lambda: compiled["swiglu"](t.gate, t.up)},
        "rotary": {
            "eager (HF)": lambda: rotary(t.q, t.k, t.cos, t.sin),
            "compiled": lambda: compiled["rotary"](t.q, t.k, t.cos, t.sin),
        },
        "cross_entropy": {
            "eager fp32 (before)": lambda: F.cross_entropy(t.logits.float(), t.labels, reduction="sum"),
            "fused, eager": lambda: fused_ops.fused_cross_entropy(t.logits, t.labels),
            "fused, compiled (--fused_loss)": lambda: fused_ops.fused_cross_entropy(t.logits, t.labels, compiled=True),
        },
    }


def time_cases(cases: dict[str, dict], t: SimpleNamespace, iters: int) -> list[dict]:
    """Forward + backward of every case: synchronised GPU time and host issue time, in ms."""
    import torch

    def fwd_bwd(f):
        def run():
            out = f()
            outs = out if isinstance(out, tuple) else (out,)
            torch.autograd.backward([o for o in outs], [torch.ones_like(o) for o in outs])
        return run

    def clear():
        for leaf in (t.x, t.w, t.gate, t.up, t.logits):
            leaf.grad = None

    results = []
    for op, impls in cases.items():
        for impl, f in impls.items():
            run = fwd_bwd(f)
            gpu_ms, cpu_ms = _time(lambda: (run(), clear()), iters)
            results.append({"op": op, "impl": impl, "gpu_ms": round(gpu_ms, 3), "cpu_ms": round(cpu_ms, 3)})
            print(f"{op:14s} {impl:32s} GPU {gpu_ms:7.3f} ms  CPU {cpu_ms:7.3f} ms", flush=True)
    return results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--iters", type=int, default=50, help="Iterations per timing.")
    p.add_argument("--json", default=None, help="Also write the results here.")
    args = p.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("needs a CUDA GPU")
        return 1
    inputs = make_inputs()
    results = time_cases(make_cases(inputs), inputs, args.iters)
    print("\n| op | implementation | fwd+bwd ms (synchronised) | CPU ms to issue |\n|---|---|---|---|")
    for r in results:
        print(f"| {r['op']} | {r['impl']} | {r['gpu_ms']:.3f} | {r['cpu_ms']:.3f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": torch.cuda.get_device_name(), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
