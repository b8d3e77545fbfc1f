"""The trainer tests' data: every sample, Chinese and English, carries supervised tokens and ends its documents."""
from __future__ import annotations

import datasets

from colossal_llama2.dataset.schema import IGNORE_INDEX, part_name
from tests.scripts.fixture_dataset import build_dataset


def test_every_sample_has_labels_in_every_category(tmp_path, tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    eos = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir)).eos_token_id
    for kind in ("pretrain", "sft"):
        out = build_dataset(tiny_tokenizer_dir, tmp_path / kind, max_length=64, num_parts=2, kind=kind)
        seen = {}
        for i in range(2):
            for row in datasets.load_from_disk(str(out / part_name(i))):
                supervised = [t for t in row["labels"] if t != IGNORE_INDEX]
                # 64 tokens of Chinese in byte fallback hold about 20 characters; at least 8 tokens supervised
                assert len(supervised) >= 8, (kind, row["category"], row["labels"])
                starts = [sum(row["seq_lengths"][:k]) for k in range(1, len(row["seq_lengths"]) + 1)]
                assert all(row["input_ids"][end - 1] == eos for end in starts), "every document keeps its </s>"
                assert all(row["labels"][end - 1] == eos for end in starts)
                assert len(row["input_ids"]) <= 64
                seen[row["category"]] = seen.get(row["category"], 0) + 1
        assert set(seen) == {"en", "zh"} and min(seen.values()) >= 2, seen
