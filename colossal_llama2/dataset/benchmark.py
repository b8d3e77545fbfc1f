"""Measure preparation speed against the raw fast tokenizer on the same synthetic data and cores.

    python colossal_llama2/dataset/benchmark.py --tokenizer_dir TOK --workdir /tmp/prep_bench --mb 8

Writes a synthetic pretraining corpus (English/Chinese lines of tests/data, shuffled) under --workdir,
then reports tokens/s (best of --repeat rounds, each run in a fresh process) of: the raw tokenizer
on every source and target in batches of 1,000 texts, both through ``tokenizer(batch)`` and through
the Rust backend's ``encode_batch_fast`` (the faster of the two is the reference), with 1 and 2 Rayon
threads (``RAYON_NUM_THREADS``, ``TOKENIZERS_PARALLELISM``); and ``prepare`` with 1 and 2
single-threaded workers: the tokenize stage and end to end (reading/validation + tokenize + packing +
writing Arrow, also jsonl in the ``prepare_jsonl`` rows; the one-time imports and tokenizer load are
left out). Raw and prepare runs alternate within each round. Pin it to the cores you compare, e.g.
``taskset -c 0,1``.
"""
from __future__ import annotations

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


def raw_tokenizer_speed(tokenizer_dir: str, corpus: Path, api: str) -> tuple[float, int]:
    """Tokens/s of the bare tokenizer over every source and target, in batches of 1,000 texts.

    ``api="hf"``: ``tokenizer(batch)`` (transformers' call); ``api="backend"``: the Rust tokenizer's
    ``encode_batch_fast`` and each encoding's ``.ids`` list, the least any use of the ids costs.
    """
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir, trust_remote_code=False)
    backend = tok.backend_tokenizer
    texts = []
    for line in corpus.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        texts += [rec["source"], rec["target"]]
    t0 = time.perf_counter()
    total = 0
    for i in range(0, len(texts), 1000):
        if api == "hf":
            total += sum(map(len, tok(texts[i:i + 1000], add_special_tokens=False)["input_ids"]))
        else:
            total += sum(len(e.ids) for e in backend.encode_batch_fast(texts[i:i + 1000], add_special_tokens=False))
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
            "end_to_end": s["tokens_tokenized"] / (t["total"] - t["setup"]), "fill_rate": s["fill_rate"]}


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
    p.add_argument("--repeat", type=int, default=3, help="rounds of all measurements; the best of each is reported")
    p.add_argument("--child", nargs=2, metavar=("WHAT", "N"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    work = Path(args.workdir)
    corpus = work / "in" / "corpus.jsonl"
    if args.child:  # one measurement in a fresh process, so tokenizer threads are set by its environment
        what, n = args.child[0], int(args.child[1])
        if what.startswith("raw_"):
            speed, total = raw_tokenizer_speed(args.tokenizer_dir, corpus, what[4:])
            print(json.dumps({"tokens": total, "tokens_per_s": speed}))
        else:
            print(json.dumps(prepare_speed(args.tokenizer_dir, corpus, work / f"out{n}{what}", n, args.max_length,
                                           jsonl=what == "prepare_jsonl")))
        return 0
    if not corpus.exists():
        write_corpus(corpus, args.mb)
    print(f"corpus: {corpus} ({corpus.stat().st_size / 1e6:.1f} MB), cpus available: {len(os.sched_getaffinity(0))}, "
          f"load average before: {os.getloadavg()[0]:.2f}")
    common = ["--tokenizer_dir", args.tokenizer_dir, "--workdir", args.workdir, "--max_length", str(args.max_length)]
    # Raw and ours alternate within each round, so the machine's load hits both alike.
    plan = [("raw_hf", n) for n in (1, 2)] + [("raw_backend", n) for n in (1, 2)] + \
           [("prepare", 1), ("prepare", 2), ("prepare_jsonl", 1), ("prepare_jsonl", 2)]
    runs: dict[tuple[str, int], list[dict]] = {key: [] for key in plan}
    for _ in range(args.repeat):
        for what, n in plan:  # raw: n Rayon threads; prepare: n single-threaded workers
            runs[what, n].append(_child(common + ["--child", what, str(n)], threads=n if what.startswith("raw") else 1))
    raw = {}
    for n in (1, 2):
        for api in ("hf", "backend"):
            best = max(r["tokens_per_s"] for r in runs[f"raw_{api}", n])
            raw[n] = max(raw.get(n, 0), best)
            print(f"raw tokenizer ({api}), {n} thread(s): {runs[f'raw_{api}', n][0]['tokens']} tokens, "
                  f"best {best:,.0f} tokens/s")
    for what in ("prepare", "prepare_jsonl"):
        for n in (1, 2):
            r = runs[what, n]
            tok, e2e = max(x["tokenize_stage"] for x in r), max(x["end_to_end"] for x in r)
            print(f"{what}, num_proc={n}: {r[0]['tokens']} tokens, tokenize stage best {tok:,.0f} tokens/s "
                  f"({tok / raw[n]:.0%} of the faster raw, {n} thread(s)), end to end best {e2e:,.0f} tokens/s "
                  f"({e2e / raw[n]:.0%}), fill rate {r[0]['fill_rate']:.4f}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    from colossal_llama2.utils.errors import run_cli

    run_cli(main)
