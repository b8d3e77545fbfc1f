"""Corpora as they are published: the same records as .jsonl, .jsonl.gz, .jsonl.zst, .parquet and a saved
``datasets`` directory give byte-identical prepared datasets (pretraining and SFT), and a bad record is named by
the original file and its line (row)."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from colossal_llama2.dataset.prepare import prepare
from colossal_llama2.utils.errors import UserInputError
from tests.test_prepare_pretrain import make_records, options as pretrain_options
from tests.test_prepare_sft import conversations, options as sft_options

FORMS = ["jsonl", "jsonl.gz", "jsonl.zst", "parquet", "datasets"]


def write_form(records: list[dict], directory: Path, form: str) -> Path:
    """The records in one form; the jsonl forms hold one json.dumps(record, ensure_ascii=False) per line."""
    directory.mkdir(parents=True)
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    if form == "jsonl":
        (directory / "corpus.jsonl").write_bytes(text)
    elif form == "jsonl.gz":
        (directory / "corpus.jsonl.gz").write_bytes(gzip.compress(text))
    elif form == "jsonl.zst":
        import zstandard

        (directory / "corpus.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(text))
    elif form == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table(columns(records)), directory / "corpus.parquet", row_group_size=7)
    else:
        import datasets

        datasets.Dataset.from_dict(columns(records)).save_to_disk(str(directory / "corpus"))
    return directory


def columns(records: list[dict]) -> dict[str, list]:
    """Every field any record has, in first-seen order (a record without one: null, as tables write it)."""
    keys = list(dict.fromkeys(k for r in records for k in r))
    return {k: [r.get(k) for r in records] for k in keys}


def output_bytes(root: Path) -> dict[str, bytes]:
    """Every file of the prepared dataset but its summary's timings and input names."""
    out = {}
    for path in sorted((root / "arrow").rglob("*")):
        if path.is_file() and path.name != "summary.json":
            data = path.read_bytes()
            out[str(path.relative_to(root))] = data
    return out


@pytest.mark.parametrize("kind", ["pretrain", "sft"])
def test_every_form_gives_the_same_dataset(tmp_path, tiny_tokenizer_dir, english_lines, chinese_lines, kind):
    records = make_records(english_lines, chinese_lines) if kind == "pretrain" else \
        conversations(english_lines, chinese_lines)
    make = pretrain_options if kind == "pretrain" else sft_options
    results = {}
    for form in FORMS:
        root = tmp_path / form.replace(".", "_")
        write_form(records, root / "in", form)
        prepare(make(root, tiny_tokenizer_dir, root / "in", data_jsonl_output_dir=None, unit_size_mb=0.002))
        results[form] = output_bytes(root)
    assert len(results["jsonl"]) > 3
    for form in FORMS[1:]:
        assert results[form] == results["jsonl"], form


def test_a_bad_row_is_named_by_the_original_file(tmp_path, tiny_tokenizer_dir, english_lines, chinese_lines):
    records = make_records(english_lines, chinese_lines)[:12]
    records[9] = {"source": "", "target": 7, "category": "en"}
    for form in ("jsonl.gz", "parquet"):
        if form == "parquet":  # a column of one type: the bad row is a missing field instead
            records[9] = {"source": "", "target": None, "category": "en"}
        root = tmp_path / form.replace(".", "_")
        write_form(records, root / "in", form)
        with pytest.raises(UserInputError) as err:
            prepare(pretrain_options(root, tiny_tokenizer_dir, root / "in"))
        assert err.value.where == f"{root / 'in' / ('corpus.' + form)}:10", str(err.value)


def test_an_unreadable_compressed_file_is_one_line(tmp_path, tiny_tokenizer_dir):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "corpus.jsonl.gz").write_bytes(b"not gzip at all")
    with pytest.raises(UserInputError, match="corpus.jsonl.gz: cannot read it as .jsonl.gz"):
        prepare(pretrain_options(tmp_path, tiny_tokenizer_dir, tmp_path / "in"))
