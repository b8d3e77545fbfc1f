"""The contract between data preparation and training: what a prepared dataset directory holds.

    <data_arrow_output_dir>/
        part-00000/ ... part-NNNNN/     datasets.save_to_disk; each also holds META_FILE
        SUMMARY_FILE                    what preparation did: counts, drops, fill rate, speed

Every sample (row) has:
    input_ids    list[int32]  token ids, len <= max_length
    labels       list[int32]  same length; -100 where no loss is taken (IGNORE_INDEX)
    category     str          the source record's category (pretraining) or "default"
    seq_lengths  list[int32]  lengths of the documents packed into this sample, in order;
                              sum(seq_lengths) == len(input_ids). One entry for SFT samples.
                              Training resets position ids and blocks attention at these boundaries.

META_FILE (JSON) in each part: {"format": FORMAT, "kind": "pretrain"|"sft", "max_length": int,
    "vocab_size": int (len(tokenizer)), "tokenizer_dir": str, "bos_token_id": int, "eos_token_id": int}
    Data preparation also writes "num_parts": int, "part": int and, for SFT, "chat_template": str (the Jinja
    template the samples were rendered with, to install into the trained model's tokenizer).
train.py refuses a directory without it, with another format, or whose vocab does not fit the model.
"""
from __future__ import annotations

IGNORE_INDEX = -100
FORMAT = "colossal_llama2.dataset/v1"
META_FILE = "colossal_llama2_meta.json"
SUMMARY_FILE = "summary.json"
COLUMNS = ("input_ids", "labels", "category", "seq_lengths")
PART_PREFIX = "part-"


def part_name(index: int) -> str:
    return f"{PART_PREFIX}{index:05d}"
