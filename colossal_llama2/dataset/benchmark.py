"""Measure preparation speed against the raw fast tokenizer on the same synthetic data and cores.

    python colossal_llama2/dataset/benchmark.py --tokenizer_dir TOK --workdir /tmp/prep_bench --mb 8

Writes a synthetic pretraining corpus (English/Chinese lines of tests/data, shuffled) under --workdir,
then reports tokens/s (best of --repeat runs, each in a fresh process) of: the raw tokenizer
(``tokenizer(batch_of_texts)`` on every source and target, batches of 1,000, with 1 and 2 Rust
threads), and ``prepare`` with 1 and 2 single-threaded workers: the tokenize stage and end to end
(reading/validation + tokenize + packing + writing Arrow, and jsonl in the last row; the one-time
tokenizer load is left out). Pin it to the cores you compare, e.g. ``taskset -c 0,1``.
"""
from __future__ import annotations

if not __package__:  # run as a file: make the repository importable
    import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))  # noqa: E401,E702

import argparse
import json
import os
import random
import shutil
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "tests" / "data"


def write_corpus(path: Path, megabytes: float, seed: int = 0) -> int:
    en = (DATA / "english.txt").read_text(encoding="utf-8").splitlines()
    zh = (DATA / "chinese.txt").read_text(encoding="utf-8").splitlines()
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(path, "w", encoding="utf-8") as fh:
        while fh.tell() < megabytes * 1e6:
            cat = rng.choice(["web", "book", "zh", "qa"])
            lines = zh if cat == "zh" else en
            target = " ".join(rng.choice(lines) for _ in range(rng.choice([1, 2, 4, 8, 16, 40])))
            source = rng.choice(en) if cat == "qa" else ""
            fh.write(json.dumps({"source": source, "target": target, "category": cat}, ensure_ascii=False) + "\n")
            n += 1
    return n


def raw_tokenizer_speed(tokenizer_dir: str, corpus: Path, threads: int) -> tuple[float, int]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    texts = []
    for line in corpus.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        texts += [rec["source"], rec["target"]]
    t0 = time.perf_counter()
    total = 0
    for i in range(0, len(texts), 1000):
        total += sum(map(len, tok(texts[i:i + 1000], add_special_tokens=False)["input_ids"]))
    return total / (time.perf_counter() - t0), total


def prepare_speed(tokenizer_dir: str, corpus: Path, out: Path, num_proc: int, max_length: int, jsonl: bool) -> dict:
    from colossal_llama2.dataset.prepare import Options, prepare

    shutil.rmtree(out, ignore_errors=True)
    s = prepare(Options(kind="pretrain", data_input_dirs=str(corpus.parent), tokenizer_dir=tokenizer_dir,
                        data_arrow_output_dir=str(out / "arrow"),
                        data_jsonl_output_dir=str(out / "jsonl") if jsonl else None,
                        max_length=max_length, num_spliced_dataset_bins=10, num_proc=num_proc))
    t = s["time_s"]
    shutil.rmtree(out, ignore_errors=True)
    return {"tokens": s["tokens_tokenized"], "tokenize_stage": s["tokenize_tokens_per_s"],
            "end_to_end": s["tokens_tokenized"] / (t["total"] - t["load_tokenizer"]), "fill_rate": s["fill_rate"]}


def _child(args: list[str], threads: int) -> dict:
    import subprocess
    import sys

    env = dict(os.environ, TOKENIZERS_PARALLELISM="true" if threads > 1 else "false", RAYON_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, __file__, *args], env=env, check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tokenizer_dir", required=True, help="tokenizer to measure with")
    p.add_argument("--workdir", required=True, help="scratch directory (corpus and outputs)")
    p.add_argument("--mb", type=float, default=8, help="size of the synthetic corpus in MB")
    p.add_argument("--max_length", type=int, default=4096, help="max_length for prepare")
    p.add_argument("--repeat", type=int, default=3, help="runs per measurement; the best is reported")
    p.add_argument("--child", nargs=2, metavar=("WHAT", "N"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    work = Path(args.workdir)
    corpus = work / "in" / "corpus.jsonl"
    if args.child:  # one measurement in a fresh process, so tokenizer threads are set by its environment
        what, n = args.child[0], int(args.child[1])
        if what == "raw":
            speed, total = raw_tokenizer_speed(args.tokenizer_dir, corpus, n)
            print(json.dumps({"tokens": total, "tokens_per_s": speed}))
        else:
            print(json.dumps(prepare_speed(args.tokenizer_dir, corpus, work / f"out{n}{what}", n, args.max_length,
                                           jsonl=what == "prepare_jsonl")))
        return 0
    if not corpus.exists():
        write_corpus(corpus, args.mb)
    print(f"corpus: {corpus} ({corpus.stat().st_size / 1e6:.1f} MB), cpus available: {len(os.sched_getaffinity(0))}")
    common = ["--tokenizer_dir", args.tokenizer_dir, "--workdir", args.workdir, "--max_length", str(args.max_length)]
    for what, n in [("raw", 1), ("raw", 2), ("prepare", 1), ("prepare", 2), ("prepare_jsonl", 2)]:
        runs = [_child(common + ["--child", what, str(n)], threads=n if what == "raw" else 1)
                for _ in range(args.repeat)]
        if what == "raw":
            best = max(r["tokens_per_s"] for r in runs)
            print(f"raw tokenizer, {n} thread(s): {runs[0]['tokens']} tokens, best {best:,.0f} tokens/s")
        else:
            tok = max(r["tokenize_stage"] for r in runs)
            e2e = max(r["end_to_end"] for r in runs)
            print(f"{what}, num_proc={n}: {runs[0]['tokens']} tokens, tokenize stage best {tok:,.0f} tokens/s, "
                  f"end to end best {e2e:,.0f} tokens/s, fill rate {runs[0]['fill_rate']:.4f}")
    return 0


if __name__ == "__main__":
    from colossal_llama2.utils.errors import run_cli

    run_cli(main)
