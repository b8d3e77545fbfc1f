#!/usr/bin/env python
"""The strongest training loop a user can build from public parts, to compare train.py against.

PyTorch FSDP2 (``fully_shard`` per decoder layer and the root; bf16 params, fp32 reduce), SDPA attention,
fused AdamW, no gradient checkpointing; optionally ``torch.compile`` per decoder layer and liger-kernel
(RMSNorm, RoPE, SwiGLU, fused linear cross-entropy). Random-init LLaMA of the benchmark's shapes on random
tokens, one document per sample, ``--micro_batch_size`` x ``--grad_accum`` samples per rank per optimizer
step. Run under torchrun; rank 0 prints one JSON line: tokens/s/GPU (median over the timed steps), peak
device memory, the losses. Without CUDA it runs on CPU over gloo (the tests use that, on a tiny shape).

    torchrun --nproc_per_node 2 benchmarks/fsdp2_peer.py --shape 7b --seq_len 4096 --compile --liger
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def cudnn_only_sdpa() -> str:
    """SDPA restricted to cuDNN's kernel (flash and memory-efficient switched off for the process), as a user
    who knows about it would set it; returns the attention implementation name for the config.

    Two softer ways were measured slower or no faster at 7b_16l on one H200 (compile peer: 17,353 and 17,569
    tokens/s): ``sdpa_kernel`` with cuDNN first entered once around the loop, 17,436 (the compiled graph kept
    its flash kernel); the same context inside each attention call, 14,939 (dynamo breaks the graph there)."""
    import torch

    torch.backends.cuda.enable_flash_sdp(False)
    torch.backends.cuda.enable_mem_efficient_sdp(False)
    torch.backends.cuda.enable_cudnn_sdp(True)
    return "sdpa"


def build_model(shape: str, seq_len: int, liger: bool, device: str = "cuda", cudnn_attention: bool = False):
    import torch
    from transformers import AutoModelForCausalLM

    from benchmarks.train_benchmark import model_config
    from colossal_llama2.model.families import family_of

    config = model_config(shape, seq_len, attn_implementation=cudnn_only_sdpa() if cudnn_attention else "sdpa")
    if liger:  # the family's own entry point (LLaMA, Qwen2, Mistral), class-wide as liger documents it
        import liger_kernel.transformers as liger_transformers

        getattr(liger_transformers, family_of(config.model_type).liger_entry)(
            rope=True, rms_norm=True, swiglu=True, cross_entropy=False, fused_linear_cross_entropy=True)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32)
    return model


def shard(model, compile_blocks: bool, float8: str | None = None):
    import torch
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if float8:
        # torchao's float8 training on the decoder layers' linears, as torchtitan does it: before sharding,
        # fp8 all-gather of the weights with scales precomputed once per step for tensorwise
        from torchao.float8 import Float8LinearConfig, convert_to_float8_training

        from colossal_llama2.training.kernels.fp8 import decoder_linear_filter

        config = (Float8LinearConfig(enable_fsdp_float8_all_gather=True) if float8 == "tensorwise"
                  else Float8LinearConfig.from_recipe_name(float8))
        convert_to_float8_training(model, config=config, module_filter_fn=decoder_linear_filter)
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for i, block in enumerate(model.model.layers):
        if compile_blocks:
            block.compile()
        # The last block's parameters are needed again at once by the backward: keep them gathered.
        fully_shard(block, mp_policy=policy, reshard_after_forward=i < len(model.model.layers) - 1)
    fully_shard(model, mp_policy=policy)
    return model


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shape", default="7b", help="a shape of benchmarks/train_benchmark.py")
    p.add_argument("--seq_len", type=int, default=4096, help="tokens per sample")
    p.add_argument("--micro_batch_size", type=int, default=1, help="samples per rank per forward")
    p.add_argument("--grad_accum", type=int, default=1, help="micro-batches per optimizer step")
    p.add_argument("--steps", type=int, default=12, help="optimizer steps")
    p.add_argument("--warmup", type=int, default=4, help="steps left out of the timing")
    p.add_argument("--compile", action="store_true", help="torch.compile each decoder layer")
    p.add_argument("--liger", action="store_true", help="liger-kernel RMSNorm/RoPE/SwiGLU/fused linear CE")
    p.add_argument("--grad_ckpt", action="store_true",
                   help="activation checkpointing per decoder layer (transformers' own), for shapes that do not "
                        "fit without it (13b on two H200)")
    p.add_argument("--float8", choices=("tensorwise", "rowwise"), default=None,
                   help="torchao float8 training for the decoder layers' linears")
    p.add_argument("--cudnn_attention", action="store_true",
                   help="SDPA with only cuDNN's kernel enabled (torch's default picks its flash kernel), as "
                        "train.py's --attention cudnn does for whole samples: the peer a user who knows it would build")
    p.add_argument("--lr", type=float, default=3e-4, help="AdamW learning rate")
    return p.parse_args(argv)


def train(model, args, device: str, rank: int, world: int) -> tuple[list[float], list[float]]:
    """The measured loop: ``args.steps`` optimizer steps on random tokens; (seconds, mean loss) per step."""
    import torch
    import torch.distributed as dist

    cuda = device == "cuda"
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1, fused=cuda)
    vocab = model.config.vocab_size
    gen = torch.Generator(device=device).manual_seed(1234 + rank)
    synchronize = torch.cuda.synchronize if cuda else (lambda: None)
    times, losses = [], []
    for step in range(args.steps):
        synchronize()
        t0 = time.perf_counter()
        total = torch.zeros((), device=device)
        for _ in range(args.grad_accum):
            ids = torch.randint(0, vocab, (args.micro_batch_size, args.seq_len), device=device, generator=gen)
            # use_cache=False: without a KV cache all compiled blocks share one graph (see model_inputs)
            loss = model(input_ids=ids, labels=ids, use_cache=False).loss / args.grad_accum
            loss.backward()
            total += loss.detach()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if args.float8 == "tensorwise":
            from torchao.float8 import precompute_float8_dynamic_scale_for_fsdp

            precompute_float8_dynamic_scale_for_fsdp(model)
        dist.all_reduce(total)
        synchronize()
        times.append(time.perf_counter() - t0)
        losses.append(total.item() / world)
    return times, losses


def main(argv=None) -> int:
    args = parse_args(argv)

    import torch
    import torch.distributed as dist

    cuda = torch.cuda.is_available()  # CPU (gloo): the tests run the same loop on a tiny shape
    device = "cuda" if cuda else "cpu"
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    model = build_model(args.shape, args.seq_len, args.liger, device, args.cudnn_attention)
    if args.grad_ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = shard(model, args.compile, args.float8)
    times, losses = train(model, args, device, rank, world)
    tokens_per_step = args.micro_batch_size * args.grad_accum * args.seq_len
    step_s = statistics.median(times[args.warmup:])
    result = {"setup": "fsdp2" + ("+compile" if args.compile else "") + ("+liger" if args.liger else "") +
                       ("+grad_ckpt" if args.grad_ckpt else "") + ("+cudnn" if args.cudnn_attention else "") +
                       (f"+float8 {args.float8}" if args.float8 else ""),
              "attention": "sdpa (cuDNN only)" if args.cudnn_attention else model.config._attn_implementation,
              "model": model.config.architectures[0] if model.config.architectures else model.config.model_type,
              "shape": args.shape, "gpus": world, "seq_len": args.seq_len, "micro_batch_size": args.micro_batch_size,
              "grad_accum": args.grad_accum, "tokens_per_gpu_per_step": tokens_per_step,
              "tokens_per_s_per_gpu": round(tokens_per_step / step_s, 1),
              "peak_memory_gib": round(torch.cuda.max_memory_allocated() / (1 << 30), 2) if cuda else None,
              "losses": [round(x, 4) for x in losses]}
    if rank == 0:
        print("FSDP2_PEER " + json.dumps(result), flush=True)
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
