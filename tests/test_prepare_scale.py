"""Data preparation at corpus scale: units of work, shards, kill + resume, memory that does not grow.

The corpus is generated (English lines and synthetic Chinese-like text in 3 categories, weights 0.5 and
2.0), cut into many small units with ``unit_size_mb`` so that every mechanism is exercised on a small input.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from colossal_llama2.dataset.loader import load_tokenized_dataset
from colossal_llama2.dataset.prepare import Options, prepare
from colossal_llama2.dataset.schema import SUMMARY_FILE
from tests.helpers.distributed import REPO_ROOT, test_env as child_env
from tests.helpers.synthetic_text import SyntheticChinese

MAX_LEN = 256
UNIT_MB = 0.02  # ~20 KB units: dozens of them
WEIGHTS = '{"zh": 0.5, "code": 2.0}'


def write_corpus(directory: Path, english_lines: list[str], n_records: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    zh = SyntheticChinese(seed=seed).lines(max(1, n_records // 3))
    directory.mkdir(parents=True, exist_ok=True)
    for f in range(3):  # several files: units never cross a file
        with open(directory / f"part{f}.jsonl", "w", encoding="utf-8") as fh:
            for i in range(f, n_records, 3):
                cat = ("en", "zh", "code")[i % 3]
                if cat == "zh":
                    target = zh[(i // 3) % len(zh)]
                else:
                    target = " ".join(rng.choice(english_lines) for _ in range(rng.randint(1, 12)))
                source = rng.choice(english_lines) + "\n" if i % 5 == 0 else ""
                fh.write(json.dumps({"source": source, "target": target, "category": cat}, ensure_ascii=False) + "\n")
    return directory


def options(tmp: Path, tokenizer_dir, in_dir, name: str, **kw) -> Options:
    base = dict(kind="pretrain", data_input_dirs=str(in_dir), tokenizer_dir=str(tokenizer_dir),
                data_arrow_output_dir=str(tmp / name / "arrow"), data_jsonl_output_dir=str(tmp / name / "jsonl"),
                max_length=MAX_LEN, num_spliced_dataset_bins=3, num_proc=1, seed=5, unit_size_mb=UNIT_MB,
                category_weights=WEIGHTS)
    base.update(kw)
    return Options(**base)


def output_bytes(root: Path) -> dict[str, bytes]:
    """Every output file (Arrow parts, meta, jsonl) except summary.json, which holds timings."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != SUMMARY_FILE}


def rows(arrow_dir: Path) -> Counter:
    ds = load_tokenized_dataset([arrow_dir]).dataset
    return Counter((tuple(r["input_ids"]), tuple(r["labels"]), r["category"]) for r in ds)


def documents(arrow_dir: Path) -> Counter:
    """Every packed document (input_ids and labels of each seq_lengths span), regardless of packing."""
    out: Counter = Counter()
    for r in load_tokenized_dataset([arrow_dir]).dataset:
        start = 0
        for n in r["seq_lengths"]:
            out[(tuple(r["input_ids"][start:start + n]), tuple(r["labels"][start:start + n]), r["category"])] += 1
            start += n
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, english_lines) -> Path:
    return write_corpus(tmp_path_factory.mktemp("scale_in") / "in", english_lines, 1500)


@pytest.fixture(scope="module")
def unsharded(tmp_path_factory, tiny_tokenizer_dir, corpus):
    tmp = tmp_path_factory.mktemp("unsharded")
    summary = prepare(options(tmp, tiny_tokenizer_dir, corpus, "all"))
    return tmp / "all", summary


def test_units_accounting_and_fill(unsharded):
    out, summary = unsharded
    assert summary["units"]["total"] > 20 and summary["units"]["prepared_here"] == summary["units"]["total"]
    t = summary["tokens"]
    assert t["input"] - t["dropped"] == t["output"] and t["input_supervised"] - t["dropped_supervised"] == t["output_supervised"]
    # Packing is per unit and category: each leaves at most a partly filled tail. With ~20 KB units that
    # costs a few percent; with the default 16 MB units it is below 1% (docs/data_preparation.md).
    assert summary["fill_rate"] >= 0.9
    cats = summary["categories"]
    assert cats["code"]["documents"] == 2 * cats["code"]["records"]
    # 0.5: half of each unit's zh records, rounded half up per unit: within one per unit of the global half
    assert abs(cats["zh"]["documents"] - cats["zh"]["records"] / 2) <= summary["units"]["total"]
    assert not (out.parent / ".arrow.cache").exists()  # the cache goes once the output is complete


def test_shards_hold_exactly_the_unsharded_documents_and_tokens(tmp_path, tiny_tokenizer_dir, corpus, unsharded):
    out, whole = unsharded
    shard_dirs, summaries = [], []
    for i in range(3):
        summaries.append(prepare(options(tmp_path, tiny_tokenizer_dir, corpus, f"shard{i}", num_shards=3,
                                         shard_index=i)))
        shard_dirs.append(tmp_path / f"shard{i}" / "arrow")
    assert sum(s["units"]["prepared_here"] for s in summaries) == whole["units"]["total"]
    for key in ("records", "documents", "chunks", "sequences"):
        assert sum(s[key] for s in summaries) == whole[key], key
    for key in whole["tokens"]:
        assert sum(s["tokens"][key] for s in summaries) == whole["tokens"][key], key
    assert sum(s["lines"]["read"] for s in summaries) == whole["lines"]["read"]
    merged = Counter()
    for d in shard_dirs:
        merged += documents(d)
    assert merged == documents(out / "arrow")
    # The training loader takes the shards together as one dataset.
    together = load_tokenized_dataset(shard_dirs)
    assert len(together) == whole["sequences"]
    # Each shard is deterministic.
    again = prepare(options(tmp_path, tiny_tokenizer_dir, corpus, "shard1-again", num_shards=3, shard_index=1))
    assert again["sequences"] == summaries[1]["sequences"]
    assert output_bytes(tmp_path / "shard1-again") == output_bytes(tmp_path / "shard1")


def _cli(tmp: Path, tokenizer_dir, in_dir, name: str) -> list[str]:
    return [sys.executable, "prepare_pretrain_dataset.py", "--data_input_dirs", str(in_dir), "--tokenizer_dir",
            str(tokenizer_dir), "--data_arrow_output_dir", str(tmp / name / "arrow"), "--data_jsonl_output_dir",
            str(tmp / name / "jsonl"), "--max_length", str(MAX_LEN), "--num_spliced_dataset_bins", "3",
            "--num_proc", "1", "--seed", "5", "--unit_size_mb", str(UNIT_MB), "--category_weights", WEIGHTS]


def _kill_when(cmd: list[str], ready, env: dict[str, str], timeout: float = 120) -> None:
    """Run ``cmd`` (tests/scripts/prepare_paused.py: it pauses where ``ready`` becomes true) and kill it there."""
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env={**child_env(), **env}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            assert proc.poll() is None, "the run ended before its pause"
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["units", "parts"])
def test_kill_and_resume_gives_the_uninterrupted_output(tmp_path, tiny_tokenizer_dir, corpus, unsharded, stage):
    out, whole = unsharded
    cache = tmp_path / "run" / ".arrow.cache"
    if stage == "units":
        ready = lambda: len(list((cache / "units").glob("unit-*"))) >= 5  # noqa: E731
        env = {"PAUSE_AFTER_UNITS": "5"}
    else:
        ready = lambda: len(list((cache / "parts").glob("*.result.json"))) >= 1  # noqa: E731
        env = {"PAUSE_AFTER_FIRST_PART": "1"}
    paused = _cli(tmp_path, tiny_tokenizer_dir, corpus, "run")
    paused[1] = str(REPO_ROOT / "tests" / "scripts" / "prepare_paused.py")
    _kill_when(paused, ready, env)
    assert not (tmp_path / "run" / "arrow").exists()  # nothing half-written in the output
    done_before = len(list((cache / "units").glob("unit-*")))
    proc = subprocess.run(_cli(tmp_path, tiny_tokenizer_dir, corpus, "run"), cwd=REPO_ROOT, env=child_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resuming: {done_before} of {whole['units']['total']} units" in proc.stderr
    assert output_bytes(tmp_path / "run") == output_bytes(out)
    assert not cache.exists()


def test_shard_and_unit_flags_are_checked(tmp_path, tiny_tokenizer_dir, corpus):
    from colossal_llama2.utils.errors import UserInputError

    for kw, flag in [(dict(num_shards=2, shard_index=2), "--shard_index"), (dict(num_shards=0), "--num_shards"),
                     (dict(unit_size_mb=0), "--unit_size_mb")]:
        with pytest.raises(UserInputError, match=flag):
            prepare(options(tmp_path, tiny_tokenizer_dir, corpus, "x", **kw))


def test_a_cache_from_other_settings_is_not_reused(tmp_path, tiny_tokenizer_dir, corpus, unsharded):
    out, whole = unsharded
    cache = tmp_path / "cache"
    first = options(tmp_path, tiny_tokenizer_dir, corpus, "a", data_cache_dir=str(cache), seed=6)
    from colossal_llama2.dataset import prepare as prep

    prep._open_cache(first, prep.list_input_files(first.data_input_dirs), {})
    (cache / "units" / "unit-000000").mkdir()  # a unit "finished" under other settings
    summary = prepare(options(tmp_path, tiny_tokenizer_dir, corpus, "b", data_cache_dir=str(cache)))
    assert output_bytes(tmp_path / "b") == output_bytes(out) and summary["sequences"] == whole["sequences"]


def _peak_rss_mb(tmp: Path, tokenizer_dir, in_dir, name: str) -> float:
    code = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL,"
            " stderr=subprocess.DEVNULL); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    cmd = _cli(tmp, tokenizer_dir, in_dir, name)
    cmd[cmd.index("--unit_size_mb") + 1] = "1"
    proc = subprocess.run([sys.executable, "-c", code, *cmd], cwd=REPO_ROOT, env=child_env(), capture_output=True,
                          text=True, timeout=600, check=True)
    return int(proc.stdout.split()[-1]) / 1024


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_corpus(tmp_path, tiny_tokenizer_dir, english_lines):
    small = write_corpus(tmp_path / "small", english_lines, 12_000, seed=1)
    large = write_corpus(tmp_path / "large", english_lines, 36_000, seed=1)
    size = lambda d: sum(p.stat().st_size for p in d.iterdir())  # noqa: E731
    assert size(large) > 2.9 * size(small) and size(small) > 5 << 20
    rss_small = _peak_rss_mb(tmp_path, tiny_tokenizer_dir, small, "s")
    rss_large = _peak_rss_mb(tmp_path, tiny_tokenizer_dir, large, "l")
    print(f"peak RSS: {rss_small:.0f} MB at {size(small) >> 20} MB, {rss_large:.0f} MB at {size(large) >> 20} MB")
    assert rss_large <= 1.25 * rss_small
