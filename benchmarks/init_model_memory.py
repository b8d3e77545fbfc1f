"""Measure init_model's peak memory on a LLaMA-shaped random model (a measurement, not a stage).

    python benchmarks/init_model_memory.py --work_dir /tmp/probe --hidden_size 2048 --num_layers 16

Builds (once) a random bf16 LlamaForCausalLM with a 32,000-piece sentencepiece tokenizer and a
69,104-piece extension of it (the seed's sizes), then runs ``init_model.py`` in a fresh process and
prints its peak resident memory next to the checkpoint size. Numbers are quoted in
docs/tokenizer_and_model.md.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from colossal_llama2.utils.errors import run_cli  # noqa: E402


def build_tokenizers(work: Path, source_size: int, target_size: int) -> tuple[Path, Path]:
    from sentencepiece import sentencepiece_model_pb2 as sp_pb2

    from colossal_llama2.tiny_base import save_llama_tokenizer, train_llama_like_sentencepiece
    from colossal_llama2.tokenizer.init_tokenizer import extend_tokenizer

    src, tgt = work / "tok32k", work / "tok69k"
    if not src.exists():
        proto = sp_pb2.ModelProto()
        proto.ParseFromString(train_llama_like_sentencepiece(["a tiny seed text for the probe"] * 4, 300))
        low = min(p.score for p in proto.pieces)
        for i in range(source_size - len(proto.pieces)):  # filler pieces standing in for LLaMA's vocabulary
            piece = proto.pieces.add()
            piece.piece, piece.score, piece.type = f"\u2581w{i}", low - 1 - i, 1
        save_llama_tokenizer(proto.SerializeToString(), src)
    if not tgt.exists():
        cjk = [chr(c) for c in range(0x4E00, 0x9FA6)]
        words = [a + b for a in cjk[:200] for b in cjk[:200]]
        pieces = (cjk + words)[: target_size - source_size]
        (work / "pieces.jsonl").write_text("".join(json.dumps({"piece": p}) + "\n" for p in pieces))
        extend_tokenizer(src, tgt, expand_tokens_file=str(work / "pieces.jsonl"))
    return src, tgt


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work_dir", required=True, help="scratch dir (the model is built there once)")
    parser.add_argument("--hidden_size", type=int, default=2048, help="model width")
    parser.add_argument("--intermediate_size", type=int, default=5504, help="MLP width")
    parser.add_argument("--num_layers", type=int, default=16, help="decoder layers")
    parser.add_argument("--init_method", default="subword_mean", help="passed to init_model.py")
    parser.add_argument("--max_shard_size", default="5GB", help="passed to init_model.py")
    args = parser.parse_args(argv)
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    src_tok, tgt_tok = build_tokenizers(work, 32000, 69104)
    model_dir = work / f"model_h{args.hidden_size}_l{args.num_layers}"
    if not model_dir.exists():
        from colossal_llama2.tiny_base import build_tiny_llama

        build_tiny_llama(src_tok, model_dir, hidden_size=args.hidden_size, intermediate_size=args.intermediate_size,
                         num_hidden_layers=args.num_layers, num_attention_heads=args.hidden_size // 128,
                         num_key_value_heads=args.hidden_size // 128, torch_dtype="bfloat16")
    size = sum(p.stat().st_size for p in model_dir.glob("*.safetensors"))
    out = work / "out"
    start = time.time()
    proc = subprocess.Popen([sys.executable, str(REPO_ROOT / "colossal_llama2" / "model" / "init_model.py"),
                             "--source_model_and_tokenizer_path", str(model_dir), "--target_tokenizer_path",
                             str(tgt_tok), "--target_model_path", str(out), "--init_method", args.init_method,
                             "--max_shard_size", args.max_shard_size, "--overwrite"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    # Sampled from outside: the child's anonymous memory (what must fit in RAM) apart from the file-backed
    # pages of the memory-mapped source safetensors (page cache, which the kernel can drop under pressure).
    anon_peak = 0.0
    while proc.poll() is None:
        anon_peak = max(anon_peak, _status_gib(proc.pid, "RssAnon"))
        time.sleep(0.005)
    if proc.returncode != 0:
        raise SystemExit(f"init_model.py failed ({proc.returncode})")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 ** 2
    out_size = sum(p.stat().st_size for p in out.glob("*.safetensors"))
    print(proc.stdout.read().strip())
    print(f"source checkpoint {size / 1024 ** 3:.2f} GiB, target {out_size / 1024 ** 3:.2f} GiB, max shard "
          f"{args.max_shard_size}: init_model peak RSS {peak:.2f} GiB ({peak / (size / 1024 ** 3):.2f}x the source), "
          f"peak anonymous RSS (sampled) {anon_peak:.2f} GiB, {time.time() - start:.0f} s")
    return 0


def _status_gib(pid: int, key: str) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024 ** 2
    except OSError:
        pass
    return 0.0


if __name__ == "__main__":
    run_cli(main)
