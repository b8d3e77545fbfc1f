#!/usr/bin/env python
"""Time causal attention, forward + backward, through every kernel train.py can use, on the GPU.

At a model's attention shape (default 7b: 32 heads of 128, bf16) and sequence length, for each backend:
torch SDPA's flash kernel (FlashAttention-2 inside torch), its cuDNN kernel, its memory-efficient kernel,
and torch's ``varlen_attn`` over one segment per sample (train.py's CUDA default, ``--attention auto``).
Reported: milliseconds per forward + backward (median of several timed loops), TFLOP/s (causal attention
FLOPs: 3.5 x forward for forward + backward, forward = 2 x 2 x b x heads x seq^2 x head_dim / 2), and the
largest difference of the output and of dq from the flash kernel's.

    python benchmarks/attention_benchmark.py [--seq_len 4096] [--batch 1,2] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.kernel_benchmark import gpu_ms  # noqa: E402


def _backends():
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def sdpa(backend):
        def run(q, k, v):  # q, k, v: [b, heads, seq, dim]
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return run

    def varlen(q, k, v):
        from torch.nn.attention.varlen import varlen_attn

        b, h, s, d = q.shape
        flat = [t.transpose(1, 2).reshape(b * s, h, d) for t in (q, k, v)]
        cu = torch.arange(0, (b + 1) * s, s, device=q.device, dtype=torch.int32)
        return varlen_attn(*flat, cu, cu, s, s, window_size=(-1, 0)).reshape(b, s, h, d).transpose(1, 2)

    return {"sdpa_flash": sdpa(SDPBackend.FLASH_ATTENTION), "sdpa_cudnn": sdpa(SDPBackend.CUDNN_ATTENTION),
            "sdpa_efficient": sdpa(SDPBackend.EFFICIENT_ATTENTION), "varlen_attn": varlen}


def measure(batch: int, seq: int, heads: int, dim: int, iters: int) -> list[dict]:
    import torch

    gen = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(batch, heads, seq, dim, device="cuda", dtype=torch.bfloat16, generator=gen)
               .requires_grad_() for _ in range(3))
    grad_out = torch.randn(batch, heads, seq, dim, device="cuda", dtype=torch.bfloat16, generator=gen)
    flops = 3.5 * 2 * 2 * batch * heads * seq * seq * dim / 2
    reference = None
    rows = []
    for name, attn in _backends().items():
        def step():
            q.grad = k.grad = v.grad = None
            attn(q, k, v).backward(grad_out)
        row = {"backend": name, "batch": batch, "seq": seq, "heads": heads, "head_dim": dim}
        try:
            out = attn(q, k, v)
            q.grad = None
            out.backward(grad_out)
            if reference is None:
                reference = (out.detach(), q.grad.detach().clone())
            ms = gpu_ms(step, iters)
        except RuntimeError as err:  # a backend that does not take this shape/GPU
            row["error"] = str(err).splitlines()[0][:200]
            rows.append(row)
            print(row, flush=True)
            continue
        row.update(ms=round(ms, 3), tflops=round(flops / ms / 1e9, 1),
                   max_abs_out_diff=float((out.detach() - reference[0]).abs().max()),
                   max_abs_dq_diff=float((q.grad - reference[1]).abs().max()))
        rows.append(row)
        print(row, flush=True)
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seq_len", type=int, default=4096, help="Tokens per sample.")
    p.add_argument("--batch", default="1,2", help="Comma-separated batch sizes (samples per GPU).")
    p.add_argument("--heads", type=int, default=32, help="Attention heads (7b: 32).")
    p.add_argument("--head_dim", type=int, default=128, help="Head dimension (7b: 128).")
    p.add_argument("--iters", type=int, default=20, help="Iterations per timed loop.")
    p.add_argument("--json", default=None, help="Also write the rows here.")
    args = p.parse_args()
    import torch

    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}")
    rows = [r for b in map(int, args.batch.split(",")) for r in measure(b, args.seq_len, args.heads,
                                                                        args.head_dim, args.iters)]
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
