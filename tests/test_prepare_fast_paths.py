"""The fast paths of data preparation give exactly what the straightforward code gives."""
from __future__ import annotations

import json

import numpy as np
import pytest

from colossal_llama2.dataset.documents import pretrain_record_parser
from colossal_llama2.dataset.tokenization import encode_documents, encode_texts
from colossal_llama2.dataset.writer import PartArrays, write_jsonl_part


@pytest.mark.parametrize("hi", [70_000, 2_000_000, 300_000_000])  # 8-byte cells, wider cells, json.dumps fallback
@pytest.mark.parametrize("tokens_per_block", [1, 37, 1 << 17])
def test_jsonl_is_byte_identical_to_json_dumps(tmp_path, hi, tokens_per_block):
    rng = np.random.default_rng(0)
    rows = 60
    lens = rng.integers(0, 40, rows)
    lens[[3, 17]] = 0
    ids = rng.integers(0, hi, int(lens.sum())).astype(np.int32)
    ids[:3] = [0, 9, 10]
    labels = np.where(rng.random(len(ids)) < 0.3, -100, ids).astype(np.int32)
    seq_counts = rng.integers(1, 4, rows)
    seq = rng.integers(1, 4096, int(seq_counts.sum())).astype(np.int32)
    cats = [["web", "中文", 'q"\\x\n'][i % 3] for i in range(rows)]
    part = PartArrays(ids, labels, np.concatenate([[0], np.cumsum(lens)]), seq,
                      np.concatenate([[0], np.cumsum(seq_counts)]), cats)
    write_jsonl_part(part, tmp_path / "p.jsonl", tokens_per_block=tokens_per_block)
    ro, so = part.row_offsets, part.seq_offsets
    expected = "".join(json.dumps({"input_ids": ids[ro[r]:ro[r + 1]].tolist(), "labels": labels[ro[r]:ro[r + 1]].tolist(),
                                   "category": cats[r], "seq_lengths": seq[so[r]:so[r + 1]].tolist()},
                                  ensure_ascii=False) + "\n" for r in range(rows))
    assert (tmp_path / "p.jsonl").read_bytes() == expected.encode("utf-8")


def test_backend_ids_equal_tokenizer_call_even_with_truncation_configured(tiny_tokenizer_dir, english_lines,
                                                                         chinese_lines):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))
    texts = english_lines[:20] + chinese_lines[:10] + ["", " ", "a <s> b </s>", "  two  spaces"]
    expected = tok(texts, add_special_tokens=False)["input_ids"]
    tok.backend_tokenizer.enable_truncation(3)  # a tokenizer.json may carry this; tokenizer(...) ignores it
    assert encode_texts(tok, texts) == expected


def test_encode_documents_layout_and_chunks(tiny_tokenizer_dir, english_lines):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))
    parse = pretrain_record_parser(tok.bos_token_id, tok.eos_token_id)
    records = [{"source": "", "target": english_lines[0]},
               {"source": " ".join(english_lines[:8]), "target": "The end."},  # long source: unlabelled chunks
               {"source": english_lines[1], "target": " ".join(english_lines[2:6])}]
    docs = [parse(dict(r, category="c")).document for r in records]
    max_len = 40
    batch = encode_documents(tok, docs, "chunk", max_len)
    flat, sup = [], []
    for r in records:  # what inference feeds the model: tokenizer(source + target), then </s>
        ids = tok(r["source"] + r["target"], add_special_tokens=False)
        enc = tok(r["source"] + r["target"], add_special_tokens=False, return_offsets_mapping=True)
        labelled = [end > len(r["source"]) for _, end in enc["offset_mapping"]]
        flat += [tok.bos_token_id] + ids["input_ids"] + [tok.eos_token_id]
        sup += [False] + labelled + [True]
    first = tok(records[0]["target"])["input_ids"] + [tok.eos_token_id]  # no source: tokenizer(target) exactly
    assert flat[:len(first)] == first
    assert batch.ids.tolist() == flat and batch.mask.tolist() == sup
    # chunks are in token order, none longer than max_len, each with a supervised token; the rest is dropped
    assert np.all(np.diff(batch.chunk_start) > 0) and batch.chunk_len.max() <= max_len
    kept = sum(batch.chunk_len.tolist()) + sum(d.tokens for d in batch.drops)
    assert kept == len(flat) and batch.doc_tokens.sum() == len(flat)
    assert {d.reason for d in batch.drops} == {"chunk_without_labels"} and all(d.doc == 1 for d in batch.drops)
    for s, n in zip(batch.chunk_start.tolist(), batch.chunk_len.tolist()):
        assert any(sup[s:s + n])
