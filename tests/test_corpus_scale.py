"""Tokenizer learning at corpus scale: a sample of at most --max_corpus_chars characters, drawn over the whole
corpus, streamed, so peak memory does not grow with the corpus."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from colossal_llama2.tokenizer.corpus import sample_corpus_texts
from tests.helpers import distributed as dist_helpers
from tests.helpers.synthetic_text import SyntheticChinese


def write_corpus(path: Path, lines: list[str], copies: int) -> Path:
    """``lines`` repeated ``copies`` times, each copy's lines numbered apart (a counter makes every line new)."""
    with open(path, "w", encoding="utf-8") as f:
        for copy in range(copies):
            for i, line in enumerate(lines):
                f.write(f"{line}{copy * len(lines) + i}\n")
    return path


def test_the_sample_is_bounded_and_drawn_from_the_whole_corpus(tmp_path):
    lines = SyntheticChinese(seed=2).lines(200)
    files = [write_corpus(tmp_path / f"{name}.txt", lines, 20) for name in ("a", "b", "c")]
    total = sum(len(line) for f in files for line in f.read_text(encoding="utf-8").splitlines())
    sample = list(sample_corpus_texts(files, max_chars=total // 10))
    chars = sum(map(len, sample))
    assert total // 10 <= chars < total // 10 + 200 and len(sample) < 0.2 * 3 * 4000
    texts = {line for line in sample}
    for f in files:  # every file contributes, not only the first
        assert texts & set(f.read_text(encoding="utf-8").splitlines())
    assert list(sample_corpus_texts(files, max_chars=total // 10)) == sample  # seeded
    assert sum(1 for _ in sample_corpus_texts(files, max_chars=0)) == 3 * 4000  # 0: everything


def peak_rss_mib(command: list[str]) -> float:
    script = ("import resource, subprocess, sys\nsubprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, "
              "stderr=subprocess.DEVNULL)\nprint(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)")
    out = subprocess.run([sys.executable, "-c", script, *command], env=dist_helpers.test_env(), capture_output=True,
                         text=True, check=True, timeout=600)
    return float(out.stdout.strip())


def test_peak_memory_does_not_grow_with_the_corpus(tmp_path, llama3_tokenizer_dir, tiny_tokenizer_dir):
    """A 3 MB and a 24 MB corpus, learned from with the same 1 M-character bound: the same peak memory (within
    15%) for a byte-level and a sentencepiece base."""
    lines = SyntheticChinese(seed=4).lines(2000)
    small = write_corpus(tmp_path / "small.txt", lines, 10)
    large = write_corpus(tmp_path / "large.txt", lines, 80)
    assert large.stat().st_size > 7 * small.stat().st_size
    for base in (llama3_tokenizer_dir, tiny_tokenizer_dir):
        peaks = []
        for corpus in (small, large):
            out = tmp_path / f"{base.name}-{corpus.stem}"
            peaks.append(peak_rss_mib([sys.executable, str(dist_helpers.REPO_ROOT / "colossal_llama2/tokenizer/init_tokenizer.py"),
                                       "--source_tokenizer_dir", str(base), "--target_tokenizer_dir", str(out),
                                       "--train_corpus", str(corpus), "--num_new_pieces", "300",
                                       "--max_corpus_chars", "1000000"]))
            assert (out / "tokenizer_config.json").is_file()
        assert peaks[1] < 1.15 * peaks[0], (base.name, peaks)
