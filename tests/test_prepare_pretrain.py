"""Pretraining data preparation: masking, nothing lost, lengths, bins, determinism, bad input, weights."""
from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from colossal_llama2.dataset.prepare import Options, prepare
from colossal_llama2.dataset.schema import FORMAT, IGNORE_INDEX, META_FILE, SUMMARY_FILE, part_name
from colossal_llama2.utils.errors import UserInputError
from tests.helpers.distributed import REPO_ROOT, run_script

MAX_LEN = 256
BINS = 3


def make_records(english_lines, chinese_lines):
    """~60 records in 3 categories; some with a source, a few longer than MAX_LEN, one long source."""
    records = []
    for i in range(60):
        cat = ("en", "zh", "mixed")[i % 3]
        lines = english_lines if cat != "zh" else chinese_lines
        n = 1 + (i * 7) % 4
        target = " ".join(lines[(i + k) % len(lines)] for k in range(n))
        if cat == "mixed":
            target += " " + chinese_lines[i % len(chinese_lines)]
        source = english_lines[(i * 3) % len(english_lines)] if i % 4 == 0 else ""
        records.append({"source": source, "target": target, "category": cat})
    # A document far longer than MAX_LEN whose source alone spans more than two chunks:
    records.append({"source": " ".join(english_lines[:30]), "target": "The end.", "category": "en"})
    return records


def write_jsonl(path: Path, records) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def options(tmp, tokenizer_dir, in_dir, **kw) -> Options:
    base = dict(kind="pretrain", data_input_dirs=str(in_dir), tokenizer_dir=str(tokenizer_dir),
                data_arrow_output_dir=str(tmp / "arrow"), data_jsonl_output_dir=str(tmp / "jsonl"),
                max_length=MAX_LEN, num_spliced_dataset_bins=BINS, num_proc=1, seed=7)
    base.update(kw)
    return Options(**base)


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, english_lines, chinese_lines):
    d = tmp_path_factory.mktemp("pretrain_in")
    records = make_records(english_lines, chinese_lines)
    write_jsonl(d / "a.jsonl", records[:30])
    write_jsonl(d / "b.jsonl", records[30:])
    return d, records


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tiny_tokenizer_dir, corpus):
    tmp = tmp_path_factory.mktemp("pretrain_out")
    summary = prepare(options(tmp, tiny_tokenizer_dir, corpus[0]))
    return tmp, summary


def load_parts(arrow_dir: Path):
    from datasets import load_from_disk

    parts = sorted(p for p in arrow_dir.iterdir() if p.name.startswith("part-"))
    return [load_from_disk(str(p)) for p in parts]


def all_rows(arrow_dir: Path):
    return [row for part in load_parts(arrow_dir) for row in part]


def expected_doc(tokenizer, rec):
    """Documented layout: <s> + tokenizer(source + target) + </s>; labels on the tokens of the target."""
    enc = tokenizer(rec["source"] + rec["target"], add_special_tokens=False, return_offsets_mapping=True)
    labelled = [end > len(rec["source"]) for _, end in enc["offset_mapping"]]
    ids = [tokenizer.bos_token_id] + enc["input_ids"] + [tokenizer.eos_token_id]
    labels = [IGNORE_INDEX] + [t if on else IGNORE_INDEX for t, on in zip(enc["input_ids"], labelled)]
    assert ids[:-1] == tokenizer(rec["source"] + rec["target"])["input_ids"]  # what inference feeds the model
    return ids, labels + [tokenizer.eos_token_id]


def split_docs(row):
    out, start = [], 0
    for n in row["seq_lengths"]:
        out.append((row["input_ids"][start:start + n], row["labels"][start:start + n]))
        start += n
    return out


def expected_chunks(tokenizer, records):
    """Every record's documented ids/labels, cut into MAX_LEN chunks; label-less chunks dropped."""
    want = Counter()
    for rec in records:
        ids, labels = expected_doc(tokenizer, rec)
        for s in range(0, len(ids), MAX_LEN):
            if any(t != IGNORE_INDEX for t in labels[s:s + MAX_LEN]):
                want[(tuple(ids[s:s + MAX_LEN]), tuple(labels[s:s + MAX_LEN]))] += 1
    return want


def test_source_masked_target_kept(prepared, corpus, tokenizer):
    tmp, _ = prepared
    _, records = corpus
    got = Counter((tuple(i), tuple(l)) for row in all_rows(tmp / "arrow") for i, l in split_docs(row))
    # Each packed document (or chunk) is exactly <s> source target </s> with -100 over <s> + source.
    assert got == expected_chunks(tokenizer, records)
    fitting = 0
    for rec in records:
        ids, labels = expected_doc(tokenizer, rec)
        if len(ids) <= MAX_LEN:
            fitting += 1
            assert (tuple(ids), tuple(labels)) in got
            sup = [t for t in labels if t != IGNORE_INDEX]
            assert sup[-1] == tokenizer.eos_token_id
            assert tokenizer.decode(sup[:-1]) == rec["target"]  # labels are exactly the target + </s>
            assert labels[:len(labels) - len(sup)] == [IGNORE_INDEX] * (len(labels) - len(sup))
    assert fitting >= 20


def test_no_supervised_token_lost_and_accounting(prepared, corpus, tokenizer):
    tmp, summary = prepared
    _, records = corpus
    sup_in = tok_in = 0
    for rec in records:
        ids, labels = expected_doc(tokenizer, rec)
        tok_in += len(ids)
        sup_in += sum(t != IGNORE_INDEX for t in labels)
    rows = all_rows(tmp / "arrow")
    sup_out = sum(sum(t != IGNORE_INDEX for t in r["labels"]) for r in rows)
    tok_out = sum(len(r["input_ids"]) for r in rows)
    assert sup_out == sup_in
    assert summary["tokens"]["input"] == tok_in and summary["tokens"]["input_supervised"] == sup_in
    # Only label-less chunks of the long-source document were dropped, and they are counted.
    dropped = summary["dropped"]["chunk_without_labels"]
    assert dropped["supervised_tokens"] == 0 and dropped["count"] >= 2
    assert tok_out == tok_in - dropped["tokens"]
    assert summary["documents_cut_into_chunks"] >= 2


def test_long_document_chunked_in_order(prepared, corpus, tokenizer):
    tmp, _ = prepared
    _, records = corpus
    ids, labels = expected_doc(tokenizer, records[-1])
    chunks = [(ids[s:s + MAX_LEN], labels[s:s + MAX_LEN]) for s in range(0, len(ids), MAX_LEN)]
    kept = [c for c in chunks if any(t != IGNORE_INDEX for t in c[1])]
    assert len(kept) < len(chunks)
    found = [d for row in all_rows(tmp / "arrow") for d in split_docs(row)]
    for c in kept:
        assert (c[0], c[1]) in found


def test_lengths_boundaries_and_fill(prepared):
    tmp, summary = prepared
    rows = all_rows(tmp / "arrow")
    for r in rows:
        assert 0 < len(r["input_ids"]) <= MAX_LEN
        assert len(r["labels"]) == len(r["input_ids"])
        assert sum(r["seq_lengths"]) == len(r["input_ids"]) and min(r["seq_lengths"]) >= 1
    total = sum(len(r["input_ids"]) for r in rows)
    assert summary["sequences"] == len(rows)
    assert summary["fill_rate"] == pytest.approx(total / (len(rows) * MAX_LEN), abs=1e-5)
    # Best-fit decreasing uses at most 11/9 of the optimal number of sequences (+1 here for rounding).
    for cat, c in summary["categories"].items():
        lower_bound = -(-c["tokens"] // MAX_LEN)
        assert lower_bound <= c["sequences"] <= lower_bound * 11 / 9 + 1, cat


def test_parts_meta_categories_and_jsonl(prepared, tiny_tokenizer_dir, tokenizer):
    tmp, summary = prepared
    parts = load_parts(tmp / "arrow")
    assert len(parts) == BINS == summary["num_parts"]
    assert (tmp / "arrow" / SUMMARY_FILE).is_file()
    for i, part in enumerate(parts):
        assert set(part.column_names) == {"input_ids", "labels", "category", "seq_lengths"}
        assert set(part["category"]) == {"en", "zh", "mixed"}
        meta = json.loads((tmp / "arrow" / part_name(i) / META_FILE).read_text())
        assert meta["format"] == FORMAT and meta["kind"] == "pretrain" and meta["max_length"] == MAX_LEN
        assert meta["vocab_size"] == len(tokenizer) and meta["eos_token_id"] == tokenizer.eos_token_id
        assert meta["bos_token_id"] == tokenizer.bos_token_id and Path(meta["tokenizer_dir"]).is_dir()
        jsonl = [json.loads(x) for x in (tmp / "jsonl" / f"{part_name(i)}.jsonl").read_text().splitlines()]
        assert jsonl == [dict(r) for r in part]
    # Bins are near-equal: per category, part sizes differ by at most one.
    for cat in ("en", "zh", "mixed"):
        sizes = [p["categories"][cat] for p in summary["parts"]]
        assert max(sizes) - min(sizes) <= 1


def test_deterministic_and_independent_of_num_proc(prepared, tmp_path, tiny_tokenizer_dir, corpus):
    tmp, _ = prepared
    prepare(options(tmp_path, tiny_tokenizer_dir, corpus[0], num_proc=2))
    for i in range(BINS):
        a = sorted((tmp / "arrow" / part_name(i)).glob("*.arrow"))
        b = sorted((tmp_path / "arrow" / part_name(i)).glob("*.arrow"))
        assert a and [x.read_bytes() for x in a] == [x.read_bytes() for x in b]
        ja = (tmp / "jsonl" / f"{part_name(i)}.jsonl").read_bytes()
        assert ja == (tmp_path / "jsonl" / f"{part_name(i)}.jsonl").read_bytes()
    # Another seed packs and bins differently.
    prepare(options(tmp_path / "s", tiny_tokenizer_dir, corpus[0], seed=8))
    assert (tmp / "jsonl" / "part-00000.jsonl").read_bytes() != (tmp_path / "s/jsonl/part-00000.jsonl").read_bytes()


def test_category_weights(tmp_path, tiny_tokenizer_dir, corpus, prepared):
    _, base = prepared
    weights = tmp_path / "w.json"
    weights.write_text('{"en": 2.0, "zh": 0.5, "mixed": 1.5}')
    s = prepare(options(tmp_path, tiny_tokenizer_dir, corpus[0], category_weights=str(weights)))
    bc, c = base["categories"], s["categories"]
    assert c["en"]["documents"] == 2 * bc["en"]["records"]
    assert c["en"]["supervised_tokens"] == 2 * bc["en"]["supervised_tokens"]
    assert c["zh"]["documents"] == round(0.5 * bc["zh"]["records"])
    assert c["mixed"]["documents"] == bc["mixed"]["records"] + round(0.5 * bc["mixed"]["records"])
    assert s["category_weights"] == {"en": 2.0, "zh": 0.5, "mixed": 1.5}
    rows = all_rows(tmp_path / "arrow")
    assert sum(sum(t != IGNORE_INDEX for t in r["labels"]) for r in rows if r["category"] == "en") \
        == c["en"]["supervised_tokens"]


@pytest.mark.parametrize("line, reason", [
    (b'{"source": "a", "target": "b"', "invalid JSON"),
    (b'{"source": "a", "category": "x"}', "missing field 'target'"),
    (b'{"source": 3, "target": "b", "category": "x"}', "field 'source' must be a string"),
    (b'{"source": "a", "target": "b", "category": ""}', "field 'category' is empty"),
    (b'["not", "an", "object"]', "a record must be a JSON object"),
    (b'{"source": "caf\xe9", "target": "b", "category": "x"}', "not valid UTF-8"),
])
def test_bad_line_names_file_and_line(tmp_path, tiny_tokenizer_dir, line, reason):
    in_dir = tmp_path / "in"
    good = b'{"source": "", "target": "fine", "category": "x"}\n'
    in_dir.mkdir()
    (in_dir / "c.jsonl").write_bytes(good + b"\n" + line + b"\n" + good)
    with pytest.raises(UserInputError) as err:
        prepare(options(tmp_path, tiny_tokenizer_dir, in_dir))
    assert str(err.value).startswith(f"{in_dir / 'c.jsonl'}:3: {reason}")
    assert not (tmp_path / "arrow").exists() and not (tmp_path / "jsonl").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["in"]  # no temporary dir left behind either


def test_cli_bad_input_exit_2_and_skip_bad_lines(tmp_path, tiny_tokenizer_dir):
    in_dir = tmp_path / "in"
    in_dir.mkdir()
    good = b'{"source": "Q", "target": "fine answer", "category": "x"}\n'
    bad = [b'{oops\n', b'{"source": "a", "category": "x"}\n', b'{"source": "\xff", "target": "b", "category": "x"}\n']
    (in_dir / "c.jsonl").write_bytes(good + bad[0] + good + bad[1] + bad[2] + good)
    args = ["prepare_pretrain_dataset.py", "--data_input_dirs", in_dir, "--tokenizer_dir", tiny_tokenizer_dir,
            "--data_arrow_output_dir", tmp_path / "arrow", "--data_jsonl_output_dir", tmp_path / "jsonl",
            "--max_length", 64, "--num_spliced_dataset_bins", 2, "--num_proc", 1]
    proc = run_script(args, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert f"error: {in_dir / 'c.jsonl'}:2: invalid JSON" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]

    proc = run_script(args + ["--skip_bad_lines"], timeout=120)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "arrow" / SUMMARY_FILE).read_text())
    assert summary["lines"]["bad"] == 3 and summary["records"] == 3
    assert [b["where"] for b in summary["bad_lines"]] == [f"{in_dir / 'c.jsonl'}:{n}" for n in (2, 4, 5)]
    assert summary["lines"]["bad_by_reason"] == {"invalid JSON": 1, "missing field 'target'": 1,
                                                 "not valid UTF-8": 1}
    assert "fill rate" in proc.stdout
    # An existing output directory is refused without --overwrite, and nothing is changed.
    before = (tmp_path / "arrow" / SUMMARY_FILE).read_bytes()
    with pytest.raises(UserInputError, match="--data_arrow_output_dir"):
        prepare(options(tmp_path, tiny_tokenizer_dir, in_dir, skip_bad_lines=True))
    assert (tmp_path / "arrow" / SUMMARY_FILE).read_bytes() == before
    again = prepare(options(tmp_path, tiny_tokenizer_dir, in_dir, skip_bad_lines=True, overwrite=True))
    assert again["records"] == 3 and again["lines"]["bad"] == 3  # replaced by the same result
    assert json.loads((tmp_path / "arrow" / SUMMARY_FILE).read_text())["records"] == 3


def test_flag_errors(tmp_path, tiny_tokenizer_dir, corpus):
    with pytest.raises(UserInputError, match="--category_weights"):
        prepare(options(tmp_path, tiny_tokenizer_dir, corpus[0], category_weights='{"en": -1}'))
    with pytest.raises(UserInputError, match="--data_input_dirs"):
        prepare(options(tmp_path, tiny_tokenizer_dir, tmp_path / "nope"))
    with pytest.raises(UserInputError, match="--max_length"):
        prepare(options(tmp_path, tiny_tokenizer_dir, corpus[0], max_length=1))
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("script", ["prepare_pretrain_dataset.py", "prepare_sft_dataset.py"])
def test_workers_fork_without_the_tokenizers_warning(tmp_path, script):
    """With 2 workers and TOKENIZERS_PARALLELISM unset (as in a user's shell), the output has no "The current process
    just got forked, after parallelism has already been used" paragraph per worker."""
    from tests.helpers.distributed import test_env
    from tests.helpers.registry import tokenizer_dir

    demo = REPO_ROOT / "examples" / "demo_data" / ("pretrain" if script.startswith("prepare_pretrain") else "sft")
    env = test_env()
    env.pop("TOKENIZERS_PARALLELISM")
    proc = subprocess.run([sys.executable, REPO_ROOT / script, "--data_input_dirs", demo, "--tokenizer_dir",
                           tokenizer_dir("llama3_1"), "--data_arrow_output_dir", tmp_path / "arrow", "--max_length",
                           "512", "--num_proc", "2"], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "huggingface/tokenizers" not in proc.stdout + proc.stderr
