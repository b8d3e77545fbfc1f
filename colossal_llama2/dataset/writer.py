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


class IntListFormatter:
    """Format many int lists as JSON text at numpy speed, byte-identical to ``json.dumps(list)``.

    ``json.dumps`` of every id list was half of preparation's time. Instead every value in [lo, hi] gets
    its text ``"123, "`` in a fixed-width byte table once (8 bytes: one uint64 per value while every text
    fits); a block of values is then one table gather and one boolean compaction that drops each entry's
    padding, and a list is a slice of that text. Blocks should stay small (~100k values) so the
    temporaries stay in cache.
    """

    MAX_VALUES = 1 << 22  # a wider value range is formatted by json.dumps instead (the table would be too big)

    @classmethod
    def for_range(cls, lo: int, hi: int) -> "IntListFormatter | None":
        return cls(lo, hi) if hi - lo < cls.MAX_VALUES else None

    def __init__(self, lo: int, hi: int):
        texts = [f"{v}, ".encode("ascii") for v in range(lo, hi + 1)]
        self.lo = lo
        self.width = max(8, max(map(len, texts)))
        self.lengths = np.fromiter(map(len, texts), dtype=np.uint8, count=len(texts))
        table = np.frombuffer(b"".join(t.ljust(self.width, b"\0") for t in texts), dtype=np.uint8)
        self.table = table.view(np.uint64) if self.width == 8 else table.reshape(len(texts), self.width)
        self.columns = np.arange(self.width, dtype=np.uint8)

    def format(self, values: np.ndarray) -> tuple[bytes, np.ndarray]:
        """(text of all values, byte offset of each value's start and of the end: len(values)+1)."""
        idx = np.asarray(values, dtype=np.int64) - self.lo
        lengths = self.lengths[idx]
        cells = self.table[idx].view(np.uint8).reshape(len(idx), self.width)
        text = cells[lengths[:, None] > self.columns].tobytes()
        offsets = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return text, offsets


def write_jsonl_part(part: PartArrays, path: Path, formatter: IntListFormatter | None = None,
                     tokens_per_block: int = 1 << 17, append: bool = False) -> None:
    """One line per row, byte-identical to ``json.dumps({"input_ids", "labels", "category", "seq_lengths"},
    ensure_ascii=False)``; rows are formatted about ``tokens_per_block`` tokens at a time."""
    if formatter is None:
        values = [a for a in (part.input_ids, part.labels, part.seq_lengths) if len(a)]
        lo = min((int(a.min()) for a in values), default=0)
        hi = max((int(a.max()) for a in values), default=0)
        formatter = IntListFormatter.for_range(lo, hi)
    if formatter is None:
        return _write_jsonl_part_json(part, path, append)
    cats = {c: json.dumps(c, ensure_ascii=False).encode("utf-8") for c in set(part.categories)}
    # first row of each block: a block ends once it holds tokens_per_block tokens (a row is never split)
    starts = np.searchsorted(part.row_offsets, np.arange(0, int(part.row_offsets[-1]), tokens_per_block), "right") - 1
    bounds = sorted(set(starts.tolist()) | {0, part.num_rows})
    with open(path, "ab" if append else "wb") as fh:
        for r0, r1 in zip(bounds[:-1], bounds[1:]):
            t0, t1 = part.row_offsets[r0], part.row_offsets[r1]
            s0, s1 = part.seq_offsets[r0], part.seq_offsets[r1]
            ids, ids_at = formatter.format(part.input_ids[t0:t1])
            lab, lab_at = formatter.format(part.labels[t0:t1])
            seq, seq_at = formatter.format(part.seq_lengths[s0:s1])
            tok = (part.row_offsets[r0:r1 + 1] - t0).tolist()
            sq = (part.seq_offsets[r0:r1 + 1] - s0).tolist()
            ids_at, lab_at, seq_at = ids_at[tok].tolist(), lab_at[tok].tolist(), seq_at[sq].tolist()
            lines = []
            for i, r in enumerate(range(r0, r1)):
                # each value's text ends with ", "; a list drops the last one (an empty list stays empty)
                a, b, c, d, e, f = ids_at[i], ids_at[i + 1], lab_at[i], lab_at[i + 1], seq_at[i], seq_at[i + 1]
                lines += [b'{"input_ids": [', ids[a:b - 2] if b > a else b"",
                          b'], "labels": [', lab[c:d - 2] if d > c else b"",
                          b'], "category": ', cats[part.categories[r]],
                          b', "seq_lengths": [', seq[e:f - 2] if f > e else b"", b"]}\n"]
            fh.write(b"".join(lines))


def _write_jsonl_part_json(part: PartArrays, path: Path, append: bool = False) -> None:
    with open(path, "a" if append else "w", encoding="utf-8") as fh:
        for r in range(part.num_rows):
            t0, t1 = part.row_offsets[r], part.row_offsets[r + 1]
            s0, s1 = part.seq_offsets[r], part.seq_offsets[r + 1]
            fh.write(json.dumps({"input_ids": part.input_ids[t0:t1].tolist(), "labels": part.labels[t0:t1].tolist(),
                                 "category": part.categories[r], "seq_lengths": part.seq_lengths[s0:s1].tolist()},
                                ensure_ascii=False))
            fh.write("\n")


class PartWriter:
    """Write one part batch by batch, so memory holds one batch of rows, not the part.

    The Arrow side is what ``datasets.save_to_disk`` writes (an empty dataset is saved first for its
    ``dataset_info.json``/``state.json`` and schema; the rows are then streamed into its Arrow file) with a
    content-derived fingerprint, so the bytes are deterministic; ``datasets.load_from_disk`` opens it.
    """

    def __init__(self, part_dir: Path, jsonl_path: Path | None, meta: dict, formatter: IntListFormatter | None):
        # One placeholder row (an empty dataset is saved without a data file); the stream replaces it.
        placeholder = PartArrays(np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(2, np.int64),
                                 np.zeros(0, np.int32), np.zeros(2, np.int64), [""])
        save_arrow_part(placeholder, part_dir, meta)
        self.part_dir, self.jsonl_path, self.formatter = part_dir, jsonl_path, formatter
        self.arrow_path = part_dir / "data-00000-of-00001.arrow"
        with pa.OSFile(str(self.arrow_path), "rb") as fh:
            schema = pa.ipc.open_stream(fh).schema
        self.sink = pa.OSFile(str(self.arrow_path), "wb")
        self.stream = pa.ipc.new_stream(self.sink, schema)
        self.digest = hashlib.sha256()
        if jsonl_path is not None:
            jsonl_path.write_bytes(b"")

    def write(self, part: PartArrays) -> None:
        for batch in to_arrow_table(part).to_batches():
            self.stream.write_batch(batch)
        for arr in (part.input_ids, part.labels, part.seq_lengths):
            self.digest.update(np.ascontiguousarray(arr).tobytes())
        self.digest.update("\n".join(part.categories).encode("utf-8"))
        if self.jsonl_path is not None:
            write_jsonl_part(part, self.jsonl_path, self.formatter, append=True)

    def close(self) -> None:
        self.stream.close()
        self.sink.close()
        state_path = self.part_dir / "state.json"
        state = json.loads(state_path.read_text(encoding="utf-8"))
        state["_fingerprint"] = self.digest.hexdigest()[:16]
        state_path.write_text(json.dumps(state, indent=2, sort_keys=True), encoding="utf-8")
