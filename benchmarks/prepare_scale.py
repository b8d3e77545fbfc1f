"""Data preparation at corpus scale: wall time, tokens/s and peak memory of the whole process tree.

    python benchmarks/prepare_scale.py --tokenizer_dir TOK --workdir /tmp/scale --corpus_mb 100 300

Generates a Chinese-like pretraining corpus of each size (tests/helpers/synthetic_text.py; one jsonl file
per 50 MB, 3 categories), runs ``prepare_pretrain_dataset.py`` on it (``--max_length 4096
--num_spliced_dataset_bins 4``, everything else default) as a user would, and samples the resident memory
of the launched process and all its workers every 20 ms. ``--repo`` runs another checkout's script
(to compare with an older version on the same machine).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_corpus(directory: Path, megabytes: float) -> Path:
    from tests.helpers.synthetic_text import SyntheticChinese

    directory.mkdir(parents=True, exist_ok=True)
    if (directory / "done").exists():
        return directory
    generator = SyntheticChinese(seed=0)
    target, written, f = int(megabytes * (1 << 20)), 0, 0
    while written < target:
        with open(directory / f"part{f:03d}.jsonl", "w", encoding="utf-8") as fh:
            size = 0
            while size < 50 << 20 and written + size < target:
                lines = generator.lines(1000)
                text = "".join(json.dumps({"source": "", "target": line, "category": ("news", "web", "books")[i % 3]},
                                          ensure_ascii=False) + "\n" for i, line in enumerate(lines))
                fh.write(text)
                size += len(text.encode("utf-8"))
        written += size
        f += 1
    (directory / "done").write_text("")
    return directory


def run(repo: Path, tokenizer_dir: str, corpus: Path, out: Path, extra: list[str]) -> dict:
    import psutil

    cmd = [sys.executable, str(repo / "prepare_pretrain_dataset.py"), "--data_input_dirs", str(corpus),
           "--tokenizer_dir", tokenizer_dir, "--data_arrow_output_dir", str(out), "--max_length", "4096",
           "--num_spliced_dataset_bins", "4", "--overwrite", *extra]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    root = psutil.Process(proc.pid)
    peak_tree = peak_one = 0
    while proc.poll() is None:
        try:
            procs = [root] + root.children(recursive=True)
            rss = [p.memory_info().rss for p in procs]
        except psutil.Error:
            continue
        peak_tree, peak_one = max(peak_tree, sum(rss)), max(peak_one, max(rss))
        time.sleep(0.02)
    wall = time.perf_counter() - t0
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}"
    summary = json.loads((out / "summary.json").read_text())
    return {"corpus_mb": round(sum(p.stat().st_size for p in corpus.glob("*.jsonl")) / (1 << 20)),
            "tokens": summary["tokens_tokenized"], "wall_s": round(wall, 1),
            "tokens_per_s": round(summary["tokens_tokenized"] / wall), "fill_rate": summary["fill_rate"],
            "peak_rss_tree_gb": round(peak_tree / (1 << 30), 2), "peak_rss_largest_process_gb": round(peak_one / (1 << 30), 2)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tokenizer_dir", required=True, help="tokenizer to prepare with")
    p.add_argument("--workdir", required=True, help="scratch directory (corpora and outputs)")
    p.add_argument("--corpus_mb", type=float, nargs="+", default=[100, 300], help="corpus sizes to measure")
    p.add_argument("--repo", default=str(REPO), help="checkout whose prepare_pretrain_dataset.py is run")
    p.add_argument("extra", nargs="*", help="more prepare_pretrain_dataset.py flags (after --)")
    args = p.parse_args(argv)
    work = Path(args.workdir)
    for mb in args.corpus_mb:
        corpus = make_corpus(work / f"corpus-{mb:g}mb", mb)
        print(json.dumps(run(Path(args.repo), args.tokenizer_dir, corpus, work / "out", args.extra)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
