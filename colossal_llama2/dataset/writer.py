"""Write prepared samples: one Arrow part (``datasets.save_to_disk``) and one jsonl file per part.

Samples are given as rows of chunk indices into one flat token array; a row's ``input_ids`` are its
chunks concatenated, ``labels`` the same ids with -100 where unsupervised, ``seq_lengths`` the chunk
lengths. Building is vectorised (one gather per part) and Arrow columns are built straight from numpy,
so there is no jsonl round trip: the jsonl copy is written from the same arrays.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa

from .schema import IGNORE_INDEX, META_FILE

ROWS_PER_RECORD_BATCH = 1024  # keeps each Arrow list's int32 offsets far from overflow


@dataclass
class PartArrays:
    input_ids: np.ndarray    # int32, all rows concatenated
    labels: np.ndarray       # int32
    row_offsets: np.ndarray  # int64, len rows+1, into input_ids
    seq_lengths: np.ndarray  # int32, all rows' chunk lengths concatenated
    seq_offsets: np.ndarray  # int64, len rows+1, into seq_lengths
    categories: list[str]

    @property
    def num_rows(self) -> int:
        return len(self.categories)


def gather_part(ids: np.ndarray, mask: np.ndarray, chunk_start: np.ndarray, chunk_len: np.ndarray,
                rows: Sequence[Sequence[int]], categories: Sequence[str]) -> PartArrays:
    """Assemble ``rows`` (lists of chunk indices) from the flat ``ids``/``mask`` arrays."""
    chunks = np.fromiter(chain.from_iterable(rows), dtype=np.int64)
    seq_offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows], dtype=np.int64)])
    lens = chunk_len[chunks]
    starts = chunk_start[chunks]
    before = np.concatenate([[0], np.cumsum(lens)])[:-1]
    total = int(lens.sum())
    index = np.arange(total, dtype=np.int64) + np.repeat(starts - before, lens)
    input_ids = ids[index]
    labels = np.where(mask[index], input_ids, IGNORE_INDEX).astype(np.int32)
    token_cum = np.concatenate([[0], np.cumsum(lens)])
    row_offsets = token_cum[seq_offsets]
    return PartArrays(input_ids, labels, row_offsets, lens.astype(np.int32), seq_offsets, list(categories))


def _list_array(values: np.ndarray, offsets: np.ndarray) -> pa.Array:
    rel = (offsets - offsets[0]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(rel, pa.int32()), pa.array(values[offsets[0]:offsets[-1]], pa.int32()))


def to_arrow_table(part: PartArrays) -> pa.Table:
    batches = []
    for r0 in range(0, part.num_rows, ROWS_PER_RECORD_BATCH):
        r1 = min(r0 + ROWS_PER_RECORD_BATCH, part.num_rows)
        tok = part.row_offsets[r0:r1 + 1]
        seq = part.seq_offsets[r0:r1 + 1]
        batches.append(pa.RecordBatch.from_arrays(
            [_list_array(part.input_ids, tok), _list_array(part.labels, tok),
             pa.array(part.categories[r0:r1], pa.string()), _list_array(part.seq_lengths, seq)],
            names=["input_ids", "labels", "category", "seq_lengths"]))
    schema = pa.schema([("input_ids", pa.list_(pa.int32())), ("labels", pa.list_(pa.int32())),
                        ("category", pa.string()), ("seq_lengths", pa.list_(pa.int32()))])
    return pa.Table.from_batches(batches, schema=schema)


def save_arrow_part(part: PartArrays, part_dir: Path, meta: dict) -> None:
    import datasets
    from datasets import Dataset
    from datasets.table import InMemoryTable

    datasets.disable_progress_bars()  # preparation shows its own bar

    table = to_arrow_table(part)
    # A content-derived fingerprint (instead of datasets' random one) keeps the saved bytes deterministic.
    digest = hashlib.sha256()
    for arr in (part.input_ids, part.labels, part.seq_lengths):
        digest.update(np.ascontiguousarray(arr).tobytes())
    digest.update("\n".join(part.categories).encode("utf-8"))
    Dataset(InMemoryTable(table), fingerprint=digest.hexdigest()[:16]).save_to_disk(str(part_dir))
    (part_dir / META_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_jsonl_part(part: PartArrays, path: Path) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for r in range(part.num_rows):
            t0, t1 = part.row_offsets[r], part.row_offsets[r + 1]
            s0, s1 = part.seq_offsets[r], part.seq_offsets[r + 1]
            fh.write(json.dumps({"input_ids": part.input_ids[t0:t1].tolist(), "labels": part.labels[t0:t1].tolist(),
                                 "category": part.categories[r], "seq_lengths": part.seq_lengths[s0:s1].tolist()},
                                ensure_ascii=False))
            fh.write("\n")
