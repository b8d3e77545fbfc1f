"""train.py's command line: the upstream README's flags (unchanged, so users' scripts keep working) plus ours."""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Sequence

from ..utils.cli import add_config_flag, parse_with_config
from .kernels.fp8 import FP8_CHOICES
from .optim import OPTIMIZERS

PLUGINS = ("gemini", "gemini_auto", "zero2", "zero2_cpu", "3d", "ddp", "auto")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="train.py",
        description="Continual pre-training / SFT of a LLaMA-family model on a Colossal-AI Booster. "
                    "Launch with `colossalai run --nproc_per_node N [--hostfile H] train.py ...` or torchrun.")
    _add_data_args(p.add_argument_group("model, data and checkpoints"))
    _add_optimization_args(p.add_argument_group("optimization"))
    _add_parallel_args(p.add_argument_group("plugins, parallelism and memory"))
    _add_kernel_args(p.add_argument_group("kernels"))
    _add_diagnostic_args(p.add_argument_group("measurement and benchmarks"))
    add_config_flag(p)
    return p


def _add_data_args(group) -> None:
    a = group.add_argument
    a("--pretrained", required=True, help="Hugging Face model dir (config.json, *.safetensors, tokenizer files).")
    a("--dataset", nargs="+", required=True,
      help="One or more prepared dataset dirs: part dirs (part-00000 ...) or their parent dir.")
    a("--max_length", type=int, default=4096,
      help="Context length; must equal the dataset's max_length (from preparation).")
    a("--pad_token", default="eos", choices=("eos", "unk"), help="Token used for padding.")
    a("--padding_mode", default="max_length", choices=("max_length", "longest"),
      help="Pad every batch to --max_length, or to its longest sample.")
    a("--num_workers", type=int, default=0, help="DataLoader worker processes.")
    a("--load_checkpoint", default=None,
      help="Resume from <save_dir>/epoch-E_step-S (everything), from `latest` (the newest complete checkpoint in "
           "--save_dir), or load weights only from a modeling/ dir.")
    a("--save_interval", type=int, default=1000, help="Save a checkpoint every N optimizer steps (and at the end).")
    a("--save_dir", default="checkpoints", help="Directory for checkpoints epoch-E_step-S/.")
    a("--keep_last", type=int, default=0, help="Keep only the newest N checkpoints (0 keeps all).")
    a("--tensorboard_dir", default=None,
      help="Directory for tensorboard events and metrics.jsonl (default: <save_dir>/tensorboard; with --no_save a "
           "directory of the run's own under the system's temp dir).")
    a("--report_to", default="tensorboard",
      help="Comma-separated trackers for the metrics, besides metrics.jsonl: tensorboard, wandb, mlflow (the last two: "
           "pip install -e .[trackers]; they follow their environment, e.g. WANDB_MODE=offline, MLFLOW_TRACKING_URI, "
           "default a file store in the metrics dir). '' for metrics.jsonl only.")
    a("--config_file", default=None,
      help="Write the run's arguments to this JSON file (default: <save_dir>/config_file.json; with --no_save in "
           "the same temp dir as the metrics).")
    a("--eval_dataset", nargs="+", default=None, help="Held-out prepared dataset dir(s) for per-category eval loss.")
    a("--allow_tokenizer_mismatch", action="store_true",
      help="Train on data prepared with another tokenizer than --pretrained's (refused by default: its ids would "
           "mean other text); for tokenizers you know give the same ids.")
    a("--eval_interval", type=int, default=0, help="Evaluate every N optimizer steps (0: only at the end).")
    a("--seed", type=int, default=42, help="Seed for data order, initialisation and NEFTune noise.")
    a("--dist_timeout_s", type=float, default=300,
      help="Seconds a collective may wait for the other ranks before the run ends (a rank that died or hangs on "
           "another host). Raise it when one rank can be that much slower than the others: a very large checkpoint "
           "save on a slow disk, a first step that compiles for minutes.")


def _add_optimization_args(group) -> None:
    a = group.add_argument
    a("--num_epochs", type=int, default=1, help="Number of passes over the dataset.")
    a("--max_steps", type=int, default=0, help="Stop after this many optimizer steps in total (0: no limit).")
    a("--micro_batch_size", type=int, default=1, help="Samples per device per forward pass.")
    a("--accumulation_steps", type=int, default=1, help="Micro-batches per optimizer step (SFT example uses 8).")
    a("--lr", type=float, default=3e-4, help="Peak learning rate (cosine decay to 10%% of it after warmup).")
    a("-s", "--warmup_steps", type=int, default=None, help="Linear warmup steps (default: 2.5%% of all steps).")
    a("-w", "--weight_decay", type=float, default=0.1, help="AdamW weight decay (not applied to norms/biases).")
    a("--gradient_clipping", "--grad_clip", dest="gradient_clipping", type=float, default=1.0,
      help="Clip the global gradient norm to this value (0 disables).")
    a("--mixed_precision", default=None, choices=("fp16", "bf16"),
      help="Mixed precision on GPU (default bf16 where the GPU supports it, i.e. compute capability 8.0+, else "
           "fp16; logged at start). The ddp plugin on CPU always trains in fp32.")
    a("--optimizer", default="adamw", choices=OPTIMIZERS,
      help="How AdamW keeps its states. adamw: fp32 master weights and fp32 states (12 bytes per parameter, "
           "sharded by zero2). adamw_bf16: bf16 weights updated with stochastic rounding, bf16 states (4 bytes). "
           "adamw8bit: the same with 8-bit block-quantised states (2 bytes). The low-memory kinds are torchao's "
           "(pip install -e .[gpu]) and run with --plugin zero2 (bf16) or ddp; their checkpoints resume on the "
           "same number of ranks.")
    a("--freeze_non_embeds_params", action="store_true",
      help="Train only embed_tokens and lm_head (after vocabulary extension).")
    a("--use_neft", action="store_true", help="NEFTune: noise on input embeddings during training.")
    a("--neft_alpha", type=float, default=5.0, help="NEFTune alpha (noise scale alpha/sqrt(L*d)).")


def _add_parallel_args(group) -> None:
    a = group.add_argument
    a("--plugin", default="auto", choices=PLUGINS,
      help="Booster plugin. gemini/gemini_auto/zero2/zero2_cpu/3d need CUDA; ddp (TorchDDPPlugin) also runs on CPU. "
           "auto (default): the fastest of zero2, gemini, zero2_cpu, gemini_auto whose estimated peak memory fits "
           "the GPUs, ddp on CPU (training/plugins/choice.py; `python -m colossal_llama2.plan` prints the same "
           "estimates; the choice and its reason are logged at start).")
    a("--tp", type=int, default=1, help="Tensor parallel size for the 3d plugin.")
    a("--zero", type=int, default=1, choices=(0, 1, 2), help="ZeRO stage for the 3d plugin.")
    a("--use_grad_checkpoint", action="store_true", help="Gradient checkpointing: less memory, more compute.")
    a("--reduce_bucket_size_in_m", type=int, default=12,
      help="zero2/zero2_cpu: gradient bucket size in millions of elements (Colossal-AI's default 12). Larger "
           "buckets mean fewer collective calls and less Python per step, smaller ones more overlap.")
    a("--zero_step", default="fast", choices=("fast", "library"),
      help="zero2/zero2_cpu optimizer step. fast (zero2): the bf16 gradient shards go straight into the fused "
           "Adam kernel, which also clips, and the updated weights are cast into place and all-gathered in place; "
           "no fp32 gradient copies, no gather buckets, the gradient norm in fp32 with foreach kernels (same "
           "arithmetic; 1.20x the library step's speed and 14 GiB less memory at 16 of 7b's layers on one H200, "
           "training/plugins/zero_step.py). fast (zero2_cpu): the offloaded step pipelined, gradients down and weights up "
           "by DMA while the host runs Adam (12x the library step at 7b on one H200, training/plugins/zero_offload.py). "
           "library: colossalai's own step, for comparison.")
    a("--zero_gather_chunk_in_m", type=int, default=64,
      help="zero2 with --zero_step fast on several GPUs: the step updates and all-gathers the weights in chunks of "
           "this many million master elements, each chunk's all-gather running while the next chunk is updated. "
           "0: all-gather after the whole update, as colossalai's step does (for before/after measurements).")
    a("--zero_reduce", default="fast", choices=("fast", "library"),
      help="zero2/zero2_cpu gradient reduction. fast: each bucket is concatenated on the communication stream and "
           "reduce-scattered with an averaging collective, so the compute stream spends no pass on concatenating "
           "or dividing it, and one GPU skips the collective's copy (same numbers; training/plugins/zero_reduction.py). "
           "library: colossalai's own reduction, for comparison.")


def _add_kernel_args(group) -> None:
    a = group.add_argument
    a("--attention", default="auto", choices=("auto", "sdpa", "varlen", "cudnn", "flash_attn"),
      help="Attention kernel. varlen: torch's varlen flash kernel (packed documents isolated without a mask). "
           "cudnn: the same, but batches of whole unpadded samples through SDPA's cuDNN kernel. auto: flash-attn 2 with --use_flash_attn if "
           "importable, else cudnn on GPUs of compute capability 9.0+, varlen on other GPUs, and SDPA with a "
           "block mask on CPU.")
    a("--use_flash_attn", action="store_true",
      help="Use flash-attn 2 when importable (with CUDA); otherwise the same as without it (--attention auto: "
           "cudnn on compute capability 9.0+, varlen on other GPUs, SDPA on CPU and with 3d). Logged at start.")
    a("--fused_ops", default="auto", choices=("auto", "on", "liger", "off"),
      help="on: LLaMA's RMSNorm as torch's fused F.rms_norm (one kernel instead of eight; outputs within one bf16 "
           "ulp); with ddp's bf16 autocast, also keep activations in bf16 (weights stay fp32). liger: "
           "liger-kernel's RMSNorm, rotary and SwiGLU kernels (zero2, zero2_cpu; pip install -e .[gpu]). auto: "
           "liger where it runs, else on with CUDA for zero2, zero2_cpu, ddp and gemini (3d's shardformer "
           "replaces the norms), else off.")
    a("--fused_loss", default="auto", choices=("auto", "on", "linear", "off"),
      help="on: cross-entropy that computes loss and gradient in one pass over the logits, without fp32 copies of "
           "them (compiled on CUDA). linear: liger-kernel's fused linear cross-entropy, lm_head and loss chunk by "
           "chunk so the logits never exist in full (zero2, zero2_cpu; less memory at some speed: for "
           "micro-batches that would not fit otherwise). auto: on except for 3d, whose "
           "shardformer model computes the loss.")
    a("--compile", action="store_true",
      help="Experimental: torch.compile each decoder layer, all layers sharing one graph (zero2, zero2_cpu, "
           "ddp). It adds little to zero2's defaults (docs/benchmarks.md); use it with --fp8.")
    a("--fp8", default="off", choices=FP8_CHOICES,
      help="fp8 matmuls in the decoder layers' linear projections, torchao's float8 training with per-tensor "
           "(tensorwise) or per-row (rowwise, experimental: needs --fp8_experimental) dynamic scales (zero2, "
           "zero2_cpu; use with --compile --fused_ops on; a GPU of compute capability 8.9+; pip install -e .[gpu]). "
           "tensorwise measured 1.19x zero2's bf16 defaults at micro-batch 1 and 1.29x at 2 (16 of 7b's layers, "
           "one H200), the loss within 1%% of bf16's over 200 steps.")
    a("--fp8_experimental", action="store_true",
      help="Run an --fp8 choice that has not met the bar it ships at (speed and loss parity): rowwise; for "
           "measurements.")


def _add_diagnostic_args(group) -> None:
    a = group.add_argument
    a("--peak_tflops_per_device", type=float, default=None,
      help="Peak dense TFLOP/s of one device for MFU (default: known GPUs by name, else MFU is not reported).")
    a("--profile_steps", default=None, metavar="FIRST:LAST",
      help="Profile optimizer steps FIRST..LAST with torch.profiler; rank 0 writes <tensorboard_dir>/profile.txt.")
    a("--gc_interval", type=int, default=0,
      help="Run Python's garbage collector every N optimizer steps instead of at arbitrary moments inside a step; "
           "0 (default) keeps Python's automatic collection. With many ranks a collection pause on one rank "
           "stalls all of them.")
    a("--random_init", action="store_true",
      help="Initialise weights randomly from --pretrained's config.json instead of loading them (benchmarks).")
    a("--no_save", action="store_true", help="Write no checkpoint at all, not even at the end (benchmarks).")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    args = parse_with_config(build_parser(), argv)
    base = Path(args.save_dir) if not args.no_save else run_temp_dir()
    if args.tensorboard_dir is None:
        args.tensorboard_dir = str(base / "tensorboard")
    if args.config_file is None:
        args.config_file = str(base / "config_file.json")
    return args


def run_temp_dir() -> Path:
    """A directory for a --no_save run's outputs (rank 0 writes them), new for each run: named after the process
    that started this host's ranks (torchrun's agent; the process itself without torchrun) and its start time. A
    master port and a pid are both reused, so a name made of them alone let a later run append its metrics to an
    earlier run's metrics.jsonl."""
    import tempfile

    import psutil

    launcher = psutil.Process(os.getppid() if "LOCAL_RANK" in os.environ else os.getpid())
    return Path(tempfile.gettempdir()) / f"colossal_llama2-run-{launcher.pid}-{int(launcher.create_time() * 1000)}"
