"""Build small prepared datasets in exactly the ``colossal_llama2/dataset/schema.py`` format.

Independent of the preparation scripts (the trainer's tests must not depend on them): each line becomes a
document ``<s> source target </s>`` with label -100 on ``<s>`` and the source. The source is the first
``source_words`` words, or for text without spaces between words (Chinese) its first ``source_chars``
characters, so every document -- Chinese included -- has supervised tokens. A document longer than
``max_length`` loses the end of its target, never its ``</s>``. Documents of one category are packed
greedily into samples of at most ``max_length`` tokens, and the samples are spread over ``num_parts``
parts, each written with ``datasets.Dataset.from_dict(...).save_to_disk(part_name(i))`` plus META_FILE,
and SUMMARY_FILE beside.

Usage as a script: fixture_dataset.py TOKENIZER_DIR OUT_DIR [MAX_LENGTH] [NUM_PARTS] [KIND]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from colossal_llama2.dataset.schema import FORMAT, IGNORE_INDEX, META_FILE, SUMMARY_FILE, part_name  # noqa: E402

DATA_DIR = REPO_ROOT / "tests" / "data"


def split_source_target(text: str, source_words: int = 3, source_chars: int = 4) -> tuple[str, str]:
    words = text.split()
    if len(words) > source_words:
        return " ".join(words[:source_words]), " ".join(words[source_words:])
    text = text.strip()
    return text[:source_chars], text[source_chars:]


def tokenize_document(tokenizer, text: str, max_length: int = 1 << 30) -> tuple[list[int], list[int]]:
    source, target = split_source_target(text)
    src = ([tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []) + \
        tokenizer.encode(source, add_special_tokens=False)
    tgt = tokenizer.encode(target, add_special_tokens=False)[:max(0, max_length - len(src) - 1)] + \
        [tokenizer.eos_token_id]
    return src + tgt, [IGNORE_INDEX] * len(src) + tgt


def pack(docs: list[tuple[list[int], list[int]]], max_length: int) -> list[dict]:
    samples, cur = [], {"input_ids": [], "labels": [], "seq_lengths": []}
    for ids, labels in docs:
        ids, labels = ids[:max_length], labels[:max_length]
        if cur["input_ids"] and len(cur["input_ids"]) + len(ids) > max_length:
            samples.append(cur)
            cur = {"input_ids": [], "labels": [], "seq_lengths": []}
        cur["input_ids"] += ids
        cur["labels"] += labels
        cur["seq_lengths"].append(len(ids))
    if cur["input_ids"]:
        samples.append(cur)
    return samples


def build_dataset(tokenizer_dir, out_dir, *, max_length: int = 64, num_parts: int = 2, kind: str = "pretrain",
                  categories: dict[str, list[str]] | None = None, vocab_size: int | None = None) -> Path:
    """Write ``out_dir/part-0000i`` (+ META_FILE each) and ``out_dir/SUMMARY_FILE``; return ``out_dir``."""
    import datasets
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    if categories is None:
        categories = {"en": (DATA_DIR / "english.txt").read_text(encoding="utf-8").splitlines(),
                      "zh": (DATA_DIR / "chinese.txt").read_text(encoding="utf-8").splitlines()}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    parts: list[list[dict]] = [[] for _ in range(num_parts)]
    for category, lines in categories.items():
        docs = [tokenize_document(tokenizer, line, max_length) for line in lines if line.strip()]
        samples = pack(docs, max_length) if kind == "pretrain" else \
            [{"input_ids": i[:max_length], "labels": lb[:max_length], "seq_lengths": [len(i[:max_length])]}
             for i, lb in docs]
        for j, s in enumerate(samples):  # bin j of every category lands in part j % num_parts
            s["category"] = category
            parts[j % num_parts].append(s)
    total = 0
    for i, samples in enumerate(parts):
        columns = {c: [s[c] for s in samples] for c in ("input_ids", "labels", "category", "seq_lengths")}
        part_dir = out_dir / part_name(i)
        datasets.Dataset.from_dict(columns).save_to_disk(str(part_dir))
        meta = {"format": FORMAT, "kind": kind, "max_length": max_length,
                "vocab_size": vocab_size if vocab_size is not None else len(tokenizer),
                "tokenizer_dir": str(tokenizer_dir), "bos_token_id": tokenizer.bos_token_id,
                "eos_token_id": tokenizer.eos_token_id}
        (part_dir / META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")
        total += len(samples)
    (out_dir / SUMMARY_FILE).write_text(json.dumps({"sequences": total, "parts": num_parts}), encoding="utf-8")
    return out_dir


if __name__ == "__main__":
    a = sys.argv[1:]
    build_dataset(a[0], a[1], max_length=int(a[2]) if len(a) > 2 else 64, num_parts=int(a[3]) if len(a) > 3 else 2,
                  kind=a[4] if len(a) > 4 else "pretrain")
