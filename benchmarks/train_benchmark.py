#!/usr/bin/env python
"""Benchmark train.py's own training step on random-init LLaMA shapes.

Every configuration runs the real train.py (same model code, plugin setup, data path, loss) under
torchrun with ``--random_init --no_save`` on a synthetic dataset in the prepared-data format, and reads
its metrics.jsonl. Reported per GPU: tokens/s and model TFLOP/s (median over the steps after warm-up;
FLOPs per token = 6*params + 12*layers*hidden*seq, recomputation not counted), MFU against the GPU's
published dense bf16 peak (the table in colossal_llama2/training/metrics.py, as train.py logs it;
--peak_tflops_per_device overrides), the share of a bf16 matmul ceiling measured here on the same GPU
beside it, and peak device memory.

    python benchmarks/train_benchmark.py --shapes 1b --plugins zero2,gemini,3d --grad_ckpt both
    python benchmarks/train_benchmark.py --shapes 7b --plugins zero2,3d --nproc 2
    # with the FSDP2 peer loops (benchmarks/fsdp2_peer.py) in the same invocation, each row's ratio to the fastest:
    python benchmarks/train_benchmark.py --shapes 7b --plugins zero2,gemini --peers plain,compile,compile_liger
    python benchmarks/train_benchmark.py --shapes tiny --plugins ddp --nproc 2 --seq_len 256   # CPU smoke
    # a lever, before/after, with the loss curves compared step by step:
    python benchmarks/train_benchmark.py --plugins zero2 --variant "before=--fused_ops off" --variant after=

Writes <out_dir>/results.json and <out_dir>/results.md (a markdown table).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

VOCAB = 69_104  # LLaMA-2's 32,000 extended with Chinese pieces, as in the seed
SHAPES = {
    "tiny": dict(hidden_size=128, intermediate_size=352, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=4, vocab_size=2048),
    "1b": dict(hidden_size=2048, intermediate_size=5376, num_hidden_layers=16, num_attention_heads=16,
               num_key_value_heads=16, vocab_size=VOCAB),
    "7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=32, vocab_size=VOCAB),
    # 7b's layers and vocabulary, 8 layers deep (2.2 B): iterating on one GPU before confirming 7b on two
    "7b_8l": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=8, num_attention_heads=32,
                  num_key_value_heads=32, vocab_size=VOCAB),
    # 16 deep (3.8 B): with 7b_8l, the cost of one more layer (t(16) - t(8)) / 8, apart from the per-step costs
    "7b_16l": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=16, num_attention_heads=32,
                   num_key_value_heads=32, vocab_size=VOCAB),
    "13b": dict(hidden_size=5120, intermediate_size=13824, num_hidden_layers=40, num_attention_heads=40,
                num_key_value_heads=40, vocab_size=VOCAB),
    # today's bases: LLaMA-3-8B (GQA 4:1, 128,256 vocabulary) and Qwen2-7B (GQA 7:1, qkv bias, 152,064 vocabulary)
    "llama3_8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=8, vocab_size=128_256, rope_theta=500_000.0),
    "qwen2_7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                     num_key_value_heads=4, vocab_size=152_064, rope_theta=1_000_000.0, model_type="qwen2"),
    "qwen2_tiny": dict(hidden_size=128, intermediate_size=352, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=2048, model_type="qwen2"),
}


def model_config(shape: str, seq_len: int, **extra):
    """The transformers config of a shape (LLaMA unless the shape names another model type), untied, bf16."""
    from transformers import AutoConfig

    spec = dict(SHAPES[shape])
    model_type = spec.pop("model_type", "llama")
    if model_type == "qwen2":
        spec.update(use_sliding_window=False, sliding_window=None)
    settings = dict(max_position_embeddings=max(4096, seq_len), rms_norm_eps=1e-5, tie_word_embeddings=False,
                    torch_dtype="bfloat16")
    return AutoConfig.for_model(model_type, **spec, **(settings | extra))


def matmul_ceiling_tflops(n: int = 8192, iters: int = 30) -> float | None:
    """Dense bf16 matmul throughput of this GPU (the MFU denominator)."""
    import torch

    if not torch.cuda.is_available():
        return None
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(5):
        a @ b
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return 2 * n**3 / statistics.median(times) / 1e12


def write_model_dir(shape: str, seq_len: int, out: Path) -> Path:
    """config.json of the shape + a small tokenizer (train.py reads pad/eos ids and saves it with models)."""
    from colossal_llama2.tiny_base import build_tiny_tokenizer

    if (out / "config.json").exists():
        return out
    build_tiny_tokenizer([REPO_ROOT / "examples" / "demo_data" / "base_english.txt"], out, vocab_size=600)
    model_config(shape, seq_len).save_pretrained(out)
    return out


def markov_tokens(rng, ranks, probs, samples: int, seq_len: int, follow: float = 0.5):
    """Token ids with structure beyond their frequencies: each token is followed by its fixed successor with
    probability ``follow``, else by a Zipf draw. A model learns the successors over a few hundred steps (the
    loss falls well below the Zipf entropy), so optimizers and number formats can be compared on the loss."""
    import numpy as np

    successor = rng.permutation(ranks)  # ranks[i] -> successor[i]
    draws = rng.choice(ranks, size=(samples, seq_len), p=probs)
    follows = rng.random((samples, seq_len)) < follow
    ids = np.empty((samples, seq_len), dtype=np.int64)
    ids[:, 0] = draws[:, 0]
    for t in range(1, seq_len):
        ids[:, t] = np.where(follows[:, t], successor[ids[:, t - 1] - ranks[0]], draws[:, t])
    return ids


def write_dataset(out: Path, *, vocab: int, seq_len: int, samples: int, docs_per_sample: int, seed: int = 0,
                  kind: str = "zipf") -> Path:
    """Packed pretraining samples in the prepared-data format; token ids Zipf-distributed (learnable), or with
    ``kind`` markov, a Zipf draw or a fixed successor of the previous token (``markov_tokens``)."""
    import numpy as np
    from datasets import Dataset

    from colossal_llama2.dataset.schema import FORMAT, META_FILE, part_name

    part = out / part_name(0)
    if part.exists():
        return out
    rng = np.random.default_rng(seed)
    ranks = np.arange(1, vocab - 2)
    probs = 1.0 / ranks
    probs /= probs.sum()
    ids = (markov_tokens(rng, ranks, probs, samples, seq_len) if kind == "markov"
           else rng.choice(ranks, size=(samples, seq_len), p=probs)) + 2
    ids = ids.astype(np.int32)
    cuts = [sorted(rng.choice(np.arange(1, seq_len), docs_per_sample - 1, replace=False).tolist())
            for _ in range(samples)]
    seq_lengths = [np.diff([0, *c, seq_len]).astype(np.int32).tolist() for c in cuts]
    Dataset.from_dict({"input_ids": ids.tolist(), "labels": ids.tolist(), "category": ["synthetic"] * samples,
                       "seq_lengths": seq_lengths}).save_to_disk(str(part))
    (part / META_FILE).write_text(json.dumps({"format": FORMAT, "kind": "pretrain", "max_length": seq_len,
                                              "vocab_size": vocab, "tokenizer_dir": "synthetic",
                                              "bos_token_id": 1, "eos_token_id": 2}))
    return out


def run_config(args, shape: str, plugin: str, grad_ckpt: bool, model_dir: Path, data_dir: Path,
               out: Path, extra: list[str], variant: str = "") -> dict:
    name = "-".join(filter(None, [shape, plugin, "ckpt" if grad_ckpt else "nockpt", args.tag, variant]))
    run_dir = out / name
    run_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(args.nproc),
           "--master_port", str(args.master_port), str(REPO_ROOT / "train.py"),
           "--pretrained", str(model_dir), "--random_init", "--no_save", "--dataset", str(data_dir),
           "--plugin", plugin, "--max_length", str(args.seq_len), "--micro_batch_size", str(args.micro_batch_size),
           "--accumulation_steps", str(args.accumulation_steps), "--max_steps", str(args.steps), "--warmup_steps", "2",
           "--lr", "3e-4", "--padding_mode", "longest",
           "--save_dir", str(run_dir / "ckpt"), "--tensorboard_dir", str(run_dir), "--config_file",
           str(run_dir / "config.json"), "--seed", "0", "--attention", args.attention,
           *(["--peak_tflops_per_device", str(args.peak)] if args.peak else [])]
    if plugin != "ddp" or args.nproc_gpu:
        cmd += ["--mixed_precision", args.precision]
    if grad_ckpt:
        cmd.append("--use_grad_checkpoint")
    if args.profile:
        cmd += ["--profile_steps", f"{args.warmup + 1}:{args.warmup + 3}"]
    cmd += extra
    print(f"\n### {name}\n$ {' '.join(cmd)}", flush=True)
    started = time.time()
    proc = subprocess.run(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=dict(os.environ, PYTHONPATH=os.pathsep.join(
                              filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])), HF_HUB_OFFLINE="1",
                                   TOKENIZERS_PARALLELISM="false"))
    (run_dir / "log.txt").write_text(proc.stdout)
    result = {"name": name, "variant": variant, "shape": shape, "plugin": plugin, "grad_ckpt": grad_ckpt,
              "nproc": args.nproc,
              "seq_len": args.seq_len, "micro_batch_size": args.micro_batch_size, "attention": args.attention,
              "accumulation_steps": args.accumulation_steps,
              "tokens_per_gpu_per_step": args.seq_len * args.micro_batch_size * args.accumulation_steps,
              "extra": extra, "wall_s": round(time.time() - started, 1), "ok": proc.returncode == 0}
    if proc.returncode != 0:
        result["error"] = proc.stdout[-3000:]
        print(f"FAILED ({proc.returncode}):\n{proc.stdout[-3000:]}", flush=True)
        return result
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "tokens_per_s" in r]
    timed = [r for r in rows if r["step"] > args.warmup] or rows
    peak = re.findall(r'"peak_device_memory_gib": ([\d.]+)', proc.stdout)
    tps = statistics.median(r["tokens_per_s"] for r in timed) / args.nproc
    tflops = statistics.median(r["tflops"] for r in timed) / args.nproc
    result.update(tokens_per_s_per_gpu=round(tps, 1), tflops_per_gpu=round(tflops, 2),
                  mfu=round(tflops / args.peak, 4) if args.peak else None,
                  of_ceiling=round(tflops / args.ceiling, 4) if args.ceiling else None,
                  peak_device_memory_gib=float(peak[-1]) if peak else None,
                  losses=[round(r["loss"], 5) for r in rows], timed_steps=len(timed))
    print(f"{name}: {tps:,.0f} tokens/s/GPU, {tflops:.1f} TFLOP/s/GPU, MFU "
          f"{result['mfu'] if result['mfu'] is not None else 'n/a'}, peak {result['peak_device_memory_gib']} GiB",
          flush=True)
    return result


def param_count(shape: str) -> int:
    c = SHAPES[shape]
    h, i, layers, v = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["vocab_size"]
    kv = h * c["num_key_value_heads"] // c["num_attention_heads"]
    qkv_bias = h + 2 * kv if c.get("model_type") == "qwen2" else 0
    return 2 * v * h + layers * (2 * h * h + 2 * h * kv + 3 * h * i + 2 * h + qkv_bias) + h


PEERS = {"plain": [], "compile_liger": ["--compile", "--liger"], "compile": ["--compile"], "liger": ["--liger"],
         # SDPA's cuDNN kernel instead of its default flash one (train.py's --attention cudnn, for whole samples)
         "compile_cudnn": ["--compile", "--cudnn_attention"], "cudnn": ["--cudnn_attention"],
         "compile_liger_cudnn": ["--compile", "--liger", "--cudnn_attention"],
         "compile_float8": ["--compile", "--float8", "tensorwise"],
         "compile_liger_float8": ["--compile", "--liger", "--float8", "tensorwise"],
         "compile_liger_float8_rowwise": ["--compile", "--liger", "--float8", "rowwise"],
         # activation checkpointing: what FSDP2 needs to fit 13b on two H200 (and the CPU test's recompute check)
         "ckpt": ["--grad_ckpt"], "compile_ckpt": ["--compile", "--grad_ckpt"],
         "compile_liger_ckpt": ["--compile", "--liger", "--grad_ckpt"]}


def run_peer(args, shape: str, peer: str, out: Path) -> dict:
    """benchmarks/fsdp2_peer.py at the same shape, sequence length, micro-batch and tokens per step."""
    name = f"{shape}-fsdp2-peer-{peer}"
    run_dir = out / name
    run_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(args.nproc), "--master_port",
           str(args.master_port), str(REPO_ROOT / "benchmarks" / "fsdp2_peer.py"), "--shape", shape, "--seq_len",
           str(args.seq_len), "--micro_batch_size", str(args.micro_batch_size), "--grad_accum",
           str(args.accumulation_steps), "--steps", str(args.steps),
           "--warmup", str(args.warmup), *PEERS[peer]]
    print(f"\n### {name}\n$ {' '.join(cmd)}", flush=True)
    started = time.time()
    proc = subprocess.run(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=dict(os.environ, PYTHONPATH=os.pathsep.join(
                              filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))))
    (run_dir / "log.txt").write_text(proc.stdout)
    result = {"name": name, "variant": "", "shape": shape, "plugin": f"fsdp2 peer ({peer})", "grad_ckpt": False,
              "nproc": args.nproc, "seq_len": args.seq_len, "micro_batch_size": args.micro_batch_size,
              "accumulation_steps": args.accumulation_steps,
              "tokens_per_gpu_per_step": args.seq_len * args.micro_batch_size * args.accumulation_steps,
              "peer": peer, "wall_s": round(time.time() - started, 1), "ok": False}
    found = [line for line in proc.stdout.splitlines() if line.startswith("FSDP2_PEER ")]
    if proc.returncode != 0 or not found:
        result["error"] = proc.stdout[-3000:]
        print(f"FAILED ({proc.returncode}):\n{proc.stdout[-3000:]}", flush=True)
        return result
    peer_result = json.loads(found[-1][len("FSDP2_PEER "):])
    tps = peer_result["tokens_per_s_per_gpu"]
    flops_per_token = 6 * param_count(shape) + 12 * SHAPES[shape]["num_hidden_layers"] * SHAPES[shape][
        "hidden_size"] * args.seq_len
    tflops = tps * flops_per_token / 1e12
    result.update(ok=True, tokens_per_s_per_gpu=tps, tflops_per_gpu=round(tflops, 2),
                  mfu=round(tflops / args.peak, 4) if args.peak else None,
                  of_ceiling=round(tflops / args.ceiling, 4) if args.ceiling else None,
                  peak_device_memory_gib=peer_result["peak_memory_gib"], losses=peer_result["losses"])
    print(f"{name}: {tps:,.0f} tokens/s/GPU, {tflops:.1f} TFLOP/s/GPU, peak {result['peak_device_memory_gib']} GiB",
          flush=True)
    return result


def compare_with_peers(results: list[dict]) -> None:
    """Each train.py row's speed as a ratio to the fastest FSDP2 peer row of the same shape."""
    best: dict[str, dict] = {}
    for r in results:
        if r["ok"] and "peer" in r and (r["shape"] not in best or
                                        r["tokens_per_s_per_gpu"] > best[r["shape"]]["tokens_per_s_per_gpu"]):
            best[r["shape"]] = r
    for r in results:
        if r["ok"] and r["shape"] in best:
            r["vs_strongest_peer"] = round(r["tokens_per_s_per_gpu"] / best[r["shape"]]["tokens_per_s_per_gpu"], 3)
            r["strongest_peer"] = best[r["shape"]]["name"]


def parse_variant(text: str) -> tuple[str, list[str]]:
    """--variant NAME=ARGS: a name and the extra train.py arguments of that variant."""
    name, sep, rest = text.partition("=")
    if not sep or not re.fullmatch(r"[\w.]+", name):
        raise argparse.ArgumentTypeError(f"expected NAME=TRAIN_ARGS (NAME of letters, digits, _ or .), got {text!r}")
    return name, shlex.split(rest)


def compare_losses(results: list[dict]) -> None:
    """Every variant's loss curve against the first variant of the same shape/plugin/grad-ckpt config."""
    first: dict[tuple, dict] = {}
    for r in results:
        key = (r["shape"], r["plugin"], r["grad_ckpt"])
        if not r["ok"]:
            continue
        if key not in first:
            first[key] = r
            continue
        base = first[key]
        diffs = [abs(a - b) for a, b in zip(r["losses"], base["losses"])]
        r["loss_vs"] = base["name"]
        r["max_abs_loss_diff"] = round(max(diffs), 5) if diffs else None
        # the first steps of a random-init run at full learning rate amplify bf16 rounding differences;
        # the tail says whether training ends up in the same place
        r["max_abs_loss_diff_last10"] = round(max(diffs[-10:]), 5) if diffs else None
        # the parity bar for a new number format or optimizer: mean loss of the last 50 steps within 1%
        tail = min(50, len(diffs))
        if tail:
            ours, theirs = (statistics.fmean(x["losses"][len(diffs) - tail:len(diffs)]) for x in (r, base))
            r["mean_loss_last50"], r["mean_loss_last50_vs"] = round(ours, 5), round(ours / theirs - 1, 5)
        r["speedup_vs"] = round(r["tokens_per_s_per_gpu"] / base["tokens_per_s_per_gpu"], 3)


def markdown(results: list[dict], ceiling: float | None, device: str, peak: float | None = None) -> str:
    lines = [f"Device: {device}; MFU against its published dense bf16 peak: "
             f"{f'{peak:.1f} TFLOP/s' if peak else 'n/a'}; bf16 matmul ceiling measured here: "
             f"{f'{ceiling:.0f} TFLOP/s' if ceiling else 'n/a (no GPU)'}", "",
             "| config | GPUs | seq | mb x acc | tokens/s/GPU | TFLOP/s/GPU | MFU | of measured ceiling "
             "| peak mem GiB | vs strongest FSDP2 peer | vs first variant |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if not r["ok"]:
            lines.append(f"| {r['name']} | {r['nproc']} | {r['seq_len']} | {r['micro_batch_size']} x "
                         f"{r['accumulation_steps']} | failed | | | | | | |")
            continue
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        of_ceiling = f"{100 * r['of_ceiling']:.1f}%" if r.get("of_ceiling") is not None else "n/a"
        versus = (f"{r['speedup_vs']:.3f}x; loss diff max {r['max_abs_loss_diff']}, last 10 steps "
                  f"{r['max_abs_loss_diff_last10']}; mean of the last 50 {r['mean_loss_last50_vs']:+.2%}"
                  if "loss_vs" in r else "")
        peer = f"{r['vs_strongest_peer']:.3f}x" if "vs_strongest_peer" in r else ""
        lines.append(f"| {r['name']} | {r['nproc']} | {r['seq_len']} "
                     f"| {r['micro_batch_size']} x {r['accumulation_steps']} "
                     f"| {r['tokens_per_s_per_gpu']:,.0f} | {r['tflops_per_gpu']:.1f} "
                     f"| {mfu} | {of_ceiling} | {r['peak_device_memory_gib']} | {peer} | {versus} |")
    return "\n".join(lines) + "\n"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="1b", help=f"Comma-separated model shapes: {', '.join(SHAPES)}.")
    p.add_argument("--plugins", default="zero2,gemini,3d", help="Comma-separated train.py plugins.")
    p.add_argument("--grad_ckpt", default="off", choices=("off", "on", "both"), help="Gradient checkpointing.")
    p.add_argument("--nproc", type=int, default=None, help="Processes (GPUs); default: all visible GPUs, or 2 on CPU.")
    p.add_argument("--seq_len", type=int, default=4096, help="Sequence length.")
    p.add_argument("--micro_batch_size", type=int, default=1, help="Samples per GPU per step.")
    p.add_argument("--accumulation_steps", type=int, default=1,
                   help="Micro-batches per optimizer step (train.py and the peers alike).")
    p.add_argument("--docs_per_sample", type=int, default=1, help="Documents packed into each sample.")
    p.add_argument("--data", default="zipf", choices=("zipf", "markov"),
                   help="Synthetic tokens: zipf (independent draws; speed runs) or markov (each token often followed "
                        "by a fixed successor: a loss that keeps falling, for loss-parity runs).")
    p.add_argument("--steps", type=int, default=30, help="Optimizer steps per configuration.")
    p.add_argument("--warmup", type=int, default=10, help="Steps left out of the medians.")
    p.add_argument("--precision", default="bf16", choices=("bf16", "fp16"), help="Mixed precision.")
    p.add_argument("--attention", default="auto", help="train.py --attention.")
    p.add_argument("--profile", action="store_true", help="Profile 3 steps after warm-up (profile.txt per run).")
    p.add_argument("--tag", default="", help="Suffix for run names (e.g. the lever being measured).")
    p.add_argument("--out_dir", default="benchmark_results", help="Where runs, results.json and results.md go.")
    p.add_argument("--master_port", type=int, default=29561, help="torchrun master port.")
    p.add_argument("--variant", action="append", type=parse_variant, default=[],
                   help="NAME=TRAIN_ARGS, repeatable: run every config once per variant with these extra train.py "
                        "arguments, and compare each variant's loss curve and speed with the first one's.")
    p.add_argument("--peers", default="", help=f"Comma-separated FSDP2 peer loops to run first, at the same shape, "
                   f"sequence length, micro-batch and tokens per step ({', '.join(PEERS)}); every row then gets "
                   f"its ratio to the fastest peer.")
    p.add_argument("--peak_tflops_per_device", type=float, default=None,
                   help="The GPU's dense bf16 peak for MFU (default: the published figure for known GPUs)")
    p.add_argument("extra", nargs="*", help="Extra train.py arguments (all variants), after `--`.")
    return p.parse_args()


def main() -> int:
    args = parse_args()
    import torch

    cuda = torch.cuda.is_available()
    args.nproc = args.nproc or (torch.cuda.device_count() if cuda else 2)
    args.nproc_gpu = cuda
    from colossal_llama2.training.metrics import device_peak_tflops

    args.ceiling = matmul_ceiling_tflops()
    args.peak = device_peak_tflops(args.peak_tflops_per_device)
    device = torch.cuda.get_device_name() if cuda else "cpu"
    print(f"device {device} x{args.nproc}; bf16 matmul ceiling {args.ceiling and round(args.ceiling)} TFLOP/s")
    out = Path(args.out_dir)
    results = []

    def write_results() -> str:  # after every configuration: a run cut short still leaves its table
        compare_losses([r for r in results if "peer" not in r])
        compare_with_peers(results)
        (out / "results.json").write_text(json.dumps({"device": device, "peak_tflops": args.peak,
                                                      "ceiling_tflops": args.ceiling,
                                                      "results": results}, indent=2))
        table = markdown(results, args.ceiling, f"{device} x{args.nproc}", args.peak)
        (out / "results.md").write_text(table)
        return table

    for shape in args.shapes.split(","):
        model_dir = write_model_dir(shape, args.seq_len, out / "models" / shape)
        samples = (args.steps + 2) * args.micro_batch_size * args.accumulation_steps * args.nproc
        data_dir = write_dataset(out / "data" / f"{shape}-{args.seq_len}-{args.docs_per_sample}-{samples}-{args.data}",
                                 vocab=SHAPES[shape]["vocab_size"], seq_len=args.seq_len, samples=samples,
                                 docs_per_sample=args.docs_per_sample, kind=args.data)
        for peer in filter(None, args.peers.split(",")):
            results.append(run_peer(args, shape, peer, out))
            table = write_results()
        for plugin in filter(None, args.plugins.split(",")):
            for ckpt in {"off": [False], "on": [True], "both": [False, True]}[args.grad_ckpt]:
                for variant, variant_args in args.variant or [("", [])]:
                    results.append(run_config(args, shape, plugin, ckpt, model_dir, data_dir, out,
                                              [*args.extra, *variant_args], variant))
                    table = write_results()
    print("\n" + table)
    return 0 if all(r["ok"] for r in results) else 1

if __name__ == "__main__":
    sys.exit(main())
