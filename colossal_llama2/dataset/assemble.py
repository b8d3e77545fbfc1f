"""Deal the finished units' samples into parts and write each part batch by batch.

Part i holds bin i of every category (bins.py); a category's sequences are numbered in unit order, so
the bins -- and the row order inside each part, seeded by (seed, part) -- are exactly what one pass over
the whole input would give. Only per-sequence indices (a few bytes per 4,096 tokens) are held for the whole
run; rows are copied from the memory-mapped unit files ``ROWS_PER_BATCH`` at a time. Each part is written
into the cache under a temporary name and renamed, with a small result file, so a resumed run skips it.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .bins import assign_parts
from .mixing import category_rng
from .schema import IGNORE_INDEX, part_name
from .unit_work import SALT_BINS, SALT_ROWS, UnitResult
from .workers import can_fork, fork_pool
from .writer import IntListFormatter, PartArrays, PartWriter

ROWS_PER_BATCH = 1024


@dataclass
class PartPlan:
    part: int
    row_unit: np.ndarray  # int64: the unit (position in the unit list) of each row, in the part's order
    row_index: np.ndarray  # int64: the row inside that unit
    row_cats: list[str]


def plan_parts(units: list[UnitResult], num_bins: int, seed: int) -> tuple[int, list[PartPlan], dict, dict]:
    """(number of parts, one plan per part, {category: parts it misses}, {category: sequences})."""
    per_cat: dict[str, tuple[list, list]] = {}
    for u, unit in enumerate(units):
        row_cat = unit.small["row_cat"]
        for ci, name in enumerate(unit.meta["categories"]):
            rows = np.flatnonzero(row_cat == ci)
            entry = per_cat.setdefault(name, ([], []))
            entry[0].append(np.full(len(rows), u, dtype=np.int64))
            entry[1].append(rows.astype(np.int64))
    categories = sorted(per_cat)
    seq_unit = {n: np.concatenate(per_cat[n][0]) for n in categories}
    seq_row = {n: np.concatenate(per_cat[n][1]) for n in categories}
    counts = {n: len(seq_unit[n]) for n in categories}
    num_parts, part_bins = assign_parts(counts, num_bins, lambda name: category_rng(seed, name, SALT_BINS))
    plans = []
    for p in range(num_parts):
        unit_ids = [seq_unit[n][part_bins[n][p]] for n in categories]
        row_ids = [seq_row[n][part_bins[n][p]] for n in categories]
        cats = [n for n in categories for _ in range(len(part_bins[n][p]))]
        order = np.random.default_rng([seed, SALT_ROWS, p]).permutation(len(cats))
        plans.append(PartPlan(p, np.concatenate(unit_ids)[order] if unit_ids else np.zeros(0, np.int64),
                              np.concatenate(row_ids)[order] if row_ids else np.zeros(0, np.int64),
                              [cats[i] for i in order]))
    missing = {n: [part_name(i) for i in range(num_parts) if len(part_bins[n][i]) == 0] for n in categories}
    return num_parts, plans, {k: v for k, v in missing.items() if v}, counts


@dataclass
class PartJob:
    plan: PartPlan
    unit_dirs: list[Path]
    out_dir: Path           # cache dir for finished parts
    jsonl_dir: Path | None  # cache dir for finished jsonl parts
    meta: dict
    formatter_range: tuple[int, int] | None


def part_result_path(out_dir: Path, part: int) -> Path:
    return out_dir / f"{part_name(part)}.result.json"


def write_part(job: PartJob) -> dict:
    """Write one part (skipped if a previous run finished it); return its summary."""
    done = part_result_path(job.out_dir, job.plan.part)
    if done.is_file():
        return json.loads(done.read_text(encoding="utf-8"))
    name = part_name(job.plan.part)
    tmp = job.out_dir / f".{name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    jsonl_tmp = job.jsonl_dir / f".{name}.jsonl.tmp-{os.getpid()}" if job.jsonl_dir is not None else None
    formatter = IntListFormatter.for_range(*job.formatter_range) if job.formatter_range else None
    writer = PartWriter(tmp, jsonl_tmp, dict(job.meta, part=job.plan.part), formatter)
    units = [UnitResult.open(d) for d in job.unit_dirs]
    tokens = supervised = 0
    for r0 in range(0, len(job.plan.row_cats), ROWS_PER_BATCH):
        part = _gather(job, units, r0, min(r0 + ROWS_PER_BATCH, len(job.plan.row_cats)))
        writer.write(part)
        tokens += len(part.input_ids)
        supervised += int((part.labels != IGNORE_INDEX).sum())
    writer.close()
    if jsonl_tmp is not None:
        os.replace(jsonl_tmp, job.jsonl_dir / f"{name}.jsonl")
    os.replace(tmp, job.out_dir / name)
    cats = job.plan.row_cats
    result = {"name": name, "samples": len(cats), "tokens": tokens, "supervised_tokens": supervised,
              "categories": {c: cats.count(c) for c in sorted(set(cats))}}
    done.write_text(json.dumps(result, ensure_ascii=False), encoding="utf-8")
    return result


def _gather(job: PartJob, units: list[UnitResult], r0: int, r1: int) -> PartArrays:
    """Rows r0..r1 of the part, read unit by unit (one open per unit and batch), in the part's order."""
    row_unit = job.plan.row_unit[r0:r1]
    row_index = job.plan.row_index[r0:r1]
    ids: list = [None] * (r1 - r0)
    labels: list = [None] * (r1 - r0)
    seqs: list = [None] * (r1 - r0)
    for u in np.unique(row_unit).tolist():
        where = np.flatnonzero(row_unit == u)
        got = units[u].rows(row_index[where].tolist())
        for k, i in enumerate(where.tolist()):
            ids[i], labels[i], seqs[i] = got[0][k], got[1][k], got[2][k]
    row_lens = np.array([len(x) for x in ids], dtype=np.int64)
    seq_lens = np.array([len(x) for x in seqs], dtype=np.int64)
    if not ids:
        empty = np.zeros(0, np.int32)
        return PartArrays(empty, empty, np.zeros(1, np.int64), empty, np.zeros(1, np.int64), [])
    return PartArrays(np.concatenate(ids), np.concatenate(labels), np.concatenate([[0], np.cumsum(row_lens)]),
                      np.concatenate(seqs).astype(np.int32), np.concatenate([[0], np.cumsum(seq_lens)]),
                      job.plan.row_cats[r0:r1])


def write_parts(jobs: list[PartJob], num_proc: int):
    """Yield ``write_part`` of each job in order, ``num_proc`` parts at a time (fork: nothing large is sent)."""
    if num_proc <= 1 or len(jobs) <= 1 or not can_fork():
        yield from map(write_part, jobs)
        return
    with fork_pool(min(num_proc, len(jobs))) as pool:
        yield from pool.imap(write_part, jobs, chunksize=1)
