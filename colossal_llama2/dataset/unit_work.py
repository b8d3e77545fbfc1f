"""One unit of work, start to end: read + validate -> category weights -> tokenize + fit -> pack -> spill.

A unit's result is a directory in the cache (``unit-000042/``) with its samples as ``.npy`` arrays (rows
ready for the parts) and ``stats.json``; it is written under a temporary name and renamed, so a directory
that exists is complete. Everything random is seeded by (seed, category, unit index), so a unit gives the
same bytes in any run, shard or worker. Memory: one unit's records, tokens and samples.
"""
from __future__ import annotations

import json
import os
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .jsonl_reader import ReadResult, read_lines
from .mixing import copies_for
from .schema import IGNORE_INDEX
from .splice import pack_best_fit_decreasing
from .tokenization import encode_documents
from .units import Unit, unit_lines
from .writer import PartArrays, gather_part

# Salts for the per-category random streams, so each use is independent of the others.
SALT_WEIGHTS, SALT_PACK, SALT_BINS, SALT_ROWS = 1, 2, 3, 4
ARRAYS = ("input_ids", "labels", "row_offsets", "seq_lengths", "seq_offsets", "row_cat")
TOKENIZE_BATCH = 256


def unit_rng(seed: int, category: str, salt: int, unit: int) -> np.random.Generator:
    """Unit 0 keeps the single-pass generator of earlier versions (same output for inputs of one unit)."""
    key = [seed, zlib.crc32(category.encode("utf-8")), salt] + ([unit] if unit else [])
    return np.random.default_rng(key)


@dataclass
class UnitJob:
    """What a worker needs besides the unit (inherited through fork, or pickled)."""

    kind: str
    parse: Callable
    fit: str
    max_length: int
    seed: int
    weights: dict
    skip_bad_lines: bool
    cache_dir: Path


def unit_dir(cache_dir: Path, unit: Unit) -> Path:
    return cache_dir / "units" / f"unit-{unit.index:06d}"


def validate_unit(job: UnitJob, unit: Unit) -> int:
    """Parse every line (no tokenization): the first bad line raises, as before any heavy work."""
    result: ReadResult = ReadResult()
    read_lines(unit.named, unit_lines(unit), job.parse, job.skip_bad_lines, result)
    return unit.size


def process_unit(job: UnitJob, tokenizer, unit: Unit) -> int:
    """Prepare ``unit`` into its cache directory (skipped if it is there); return its size in bytes."""
    final = unit_dir(job.cache_dir, unit)
    if final.is_dir():
        return unit.size
    read: ReadResult = ReadResult()
    read_lines(unit.named, unit_lines(unit), job.parse, job.skip_bad_lines, read)
    categories = sorted({r.category for r in read.records})
    cat_index = {c: i for i, c in enumerate(categories)}
    record_cat = np.array([cat_index[r.category] for r in read.records], dtype=np.int64)
    copies = np.zeros(len(read.records), dtype=np.int64)
    for ci, name in enumerate(categories):
        members = np.flatnonzero(record_cat == ci)
        copies[members] = copies_for(len(members), job.weights.get(name, 1.0),
                                     unit_rng(job.seed, name, SALT_WEIGHTS, unit.index))
    selected = np.flatnonzero(copies > 0)
    tokens = _tokenize(job, tokenizer, [read.records[i].document for i in selected])
    rows, row_cats, stats = _pack(job, unit, categories, record_cat, copies, selected, tokens)
    part = gather_part(tokens["ids"], tokens["mask"], tokens["chunk_start"], tokens["chunk_len"], rows, row_cats)
    for name in categories:
        stats[name]["supervised_tokens"] = 0
    if part.num_rows:
        sup_per_row = np.add.reduceat(part.labels != IGNORE_INDEX, part.row_offsets[:-1])
        for name, sup in zip(row_cats, sup_per_row.tolist()):
            stats[name]["supervised_tokens"] += sup
    meta = {"categories": categories, "stats": stats, "records": len(read.records),
            "lines": {"read": read.lines_read, "blank": read.blank_lines, "bad": read.bad_lines},
            "bad_reasons": read.bad_reasons, "bad_line_list": read.bad_line_list,
            "tokenized_tokens": int(tokens["doc_tokens"].sum()),
            "id_range": [int(part.input_ids.min(initial=0)), int(part.input_ids.max(initial=0))],
            "max_seq_length": int(part.seq_lengths.max(initial=0))}
    _save(final, part, np.array([cat_index[c] for c in row_cats], dtype=np.int32), meta)
    return unit.size


def _tokenize(job: UnitJob, tokenizer, docs: list) -> dict[str, np.ndarray]:
    columns = {k: [] for k in ("ids", "mask", "chunk_doc", "chunk_start", "chunk_len", "doc_tokens", "doc_sup",
                               "doc_split")}
    drops = []
    base_doc = base_tok = 0
    for i in range(0, len(docs), TOKENIZE_BATCH):
        batch = encode_documents(tokenizer, docs[i:i + TOKENIZE_BATCH], job.fit, job.max_length)
        for key, value in (("ids", batch.ids), ("mask", batch.mask), ("chunk_doc", base_doc + batch.chunk_doc),
                           ("chunk_start", batch.chunk_start + base_tok), ("chunk_len", batch.chunk_len),
                           ("doc_tokens", batch.doc_tokens), ("doc_sup", batch.doc_supervised),
                           ("doc_split", batch.doc_split)):
            columns[key].append(value)
        drops += [(base_doc + d.doc, d.reason, d.tokens, d.supervised) for d in batch.drops]
        base_doc += len(batch.doc_tokens)
        base_tok += len(batch.ids)
    empty = {"ids": np.int32, "mask": bool}
    out = {k: np.concatenate(v) if v else np.zeros(0, dtype=empty.get(k, np.int64)) for k, v in columns.items()}
    out["drops"] = drops
    return out


def _pack(job: UnitJob, unit: Unit, categories: list[str], record_cat: np.ndarray, copies: np.ndarray,
          selected: np.ndarray, tokens: dict) -> tuple[list[list[int]], list[str], dict]:
    """Per category: expand copies, then pack chunks (pretraining) or keep one per sample (SFT)."""
    chunk_rec = selected[tokens["chunk_doc"]]
    chunk_copies = copies[chunk_rec]
    chunk_cat = record_cat[chunk_rec]
    sel_cat, sel_copies = record_cat[selected], copies[selected]
    rows, row_cats, stats = [], [], {}
    for ci, name in enumerate(categories):
        mine = np.flatnonzero(chunk_cat == ci)
        expanded = np.repeat(mine, chunk_copies[mine])
        if job.kind == "pretrain":
            packed = pack_best_fit_decreasing(tokens["chunk_len"][expanded], job.max_length,
                                              unit_rng(job.seed, name, SALT_PACK, unit.index))
            seqs = [[int(expanded[i]) for i in seq] for seq in packed]
        else:
            seqs = [[int(c)] for c in expanded]
        rows += seqs
        row_cats += [name] * len(seqs)
        in_cat = sel_cat == ci
        stats[name] = {
            "records": int((record_cat == ci).sum()),
            "weight": job.weights.get(name, 1.0),
            "documents": int(copies[record_cat == ci].sum()),
            "input_tokens": int((tokens["doc_tokens"][in_cat] * sel_copies[in_cat]).sum()),
            "input_supervised_tokens": int((tokens["doc_sup"][in_cat] * sel_copies[in_cat]).sum()),
            "documents_cut_into_chunks": int(sel_copies[in_cat & (tokens["doc_split"] > 1)].sum()),
            "chunks": int(len(expanded)),
            "sequences": len(seqs),
            "tokens": int(tokens["chunk_len"][expanded].sum()),
            "dropped": {},
        }
    for doc, reason, n_tokens, sup in tokens["drops"]:
        rec = int(selected[doc])
        entry = stats[categories[record_cat[rec]]]["dropped"].setdefault(
            reason, {"count": 0, "tokens": 0, "supervised_tokens": 0})
        entry["count"] += int(copies[rec])
        entry["tokens"] += n_tokens * int(copies[rec])
        entry["supervised_tokens"] += sup * int(copies[rec])
    return rows, row_cats, stats


def _save(final: Path, part: PartArrays, row_cat: np.ndarray, meta: dict) -> None:
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    arrays = {"input_ids": part.input_ids, "labels": part.labels, "row_offsets": part.row_offsets,
              "seq_lengths": part.seq_lengths, "seq_offsets": part.seq_offsets, "row_cat": row_cat}
    for name, arr in arrays.items():
        np.save(tmp / f"{name}.npy", arr)
    (tmp / "stats.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, final)


@dataclass
class UnitResult:
    """A finished unit, opened for reading: its small per-row arrays loaded, its token arrays left on disk.

    Rows are read with ``os.pread``, not through memory maps: mapped pages count as resident memory
    until unmapped, and reading every unit's rows in random order would map the whole corpus.
    """

    directory: Path
    meta: dict
    small: dict            # row_cat, row_offsets, seq_offsets, seq_lengths
    token_offsets: dict    # byte offset of the data in input_ids.npy / labels.npy

    @classmethod
    def open(cls, directory: Path) -> "UnitResult":
        small = {name: np.load(directory / f"{name}.npy") for name in ("row_cat", "row_offsets", "seq_offsets",
                                                                       "seq_lengths")}
        offsets = {}
        for name in ("input_ids", "labels"):
            with open(directory / f"{name}.npy", "rb") as fh:
                version = np.lib.format.read_magic(fh)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                _, _, dtype = read_header(fh)
                if dtype != np.int32:
                    raise ValueError(f"{directory / name}.npy: expected int32, got {dtype}")
                offsets[name] = fh.tell()
        return cls(directory, json.loads((directory / "stats.json").read_text(encoding="utf-8")), small, offsets)

    def rows(self, indices: list[int]) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
        """(input_ids, labels, seq_lengths) of each row in ``indices``."""
        ro, so = self.small["row_offsets"], self.small["seq_offsets"]
        out = {"input_ids": [], "labels": []}
        for name in out:
            fd = os.open(self.directory / f"{name}.npy", os.O_RDONLY)
            try:
                for r in indices:
                    t0, t1 = int(ro[r]), int(ro[r + 1])
                    data = os.pread(fd, 4 * (t1 - t0), self.token_offsets[name] + 4 * t0)
                    out[name].append(np.frombuffer(data, dtype=np.int32))
            finally:
                os.close(fd)
        seqs = [self.small["seq_lengths"][int(so[r]):int(so[r + 1])] for r in indices]
        return out["input_ids"], out["labels"], seqs
