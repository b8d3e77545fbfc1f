"""The input forms data preparation reads: ``.jsonl``, ``.jsonl.gz``, ``.jsonl.zst``, ``.parquet`` and directories a
``datasets`` ``save_to_disk`` wrote.

Plain jsonl is read in place, in byte ranges (``units.py``). Every other form is first streamed, batch by batch,
into a jsonl file in the preparation's cache dir (a compressed file decompressed as it is; a parquet file or a saved
dataset one ``json.dumps(row, ensure_ascii=False)`` per row, a null field left out as a table's way of saying the
record lacks it), so memory stays flat whatever the input's size, a
resumed preparation reuses it, and the rest of preparation is the same code. Bad records are named by the original
file and the line (the row, for parquet and saved datasets).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..utils.errors import UserInputError

SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".parquet")
DATASET_MARKERS = ("dataset_info.json", "state.json")
BATCH_ROWS = 1024


def is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and all((path / name).is_file() for name in DATASET_MARKERS)


def input_kind(path: Path) -> str | None:
    if is_saved_dataset(path):
        return "datasets"
    return next((s for s in SUFFIXES if path.is_file() and path.name.endswith(s)), None)


def find_inputs(directory: Path) -> list[Path]:
    """The inputs of one ``--data_input_dirs`` entry: the entry itself if it is a saved dataset, else every file of
    a known form (and saved dataset directory) in it, sorted by name."""
    if is_saved_dataset(directory):
        return [directory]
    return sorted(p for p in directory.iterdir() if input_kind(p))


def as_jsonl(path: Path, cache_dir: Path, index: int) -> Path:
    """``path`` itself for plain jsonl; else its records as a jsonl file in ``cache_dir`` (written once)."""
    kind = input_kind(path)
    if kind == ".jsonl":
        return path
    target = cache_dir / "inputs" / f"{index:05d}-{path.name}.jsonl"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as out:
            WRITERS[kind](path, out)
    except (OSError, EOFError, ValueError) as err:
        tmp.unlink(missing_ok=True)
        raise UserInputError(f"cannot read it as {kind}: {str(err).splitlines()[0] if str(err) else err!r}",
                             where=str(path)) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, target)
    return target


def _gzip(path: Path, out) -> None:
    import gzip

    with gzip.open(path, "rb") as f:
        shutil.copyfileobj(f, out, 1 << 20)


def _zstd(path: Path, out) -> None:
    try:
        import zstandard
    except ImportError:
        raise UserInputError("reading .zst needs the zstandard package (pip install zstandard)",
                             where=str(path)) from None
    with open(path, "rb") as f, zstandard.ZstdDecompressor().stream_reader(f) as reader:
        shutil.copyfileobj(reader, out, 1 << 20)


def _without_nulls(value):
    """A column's null is how a table says a record lacks the field: the record without it, as in jsonl."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _rows(rows, out) -> None:
    for row in rows:
        out.write((json.dumps(_without_nulls(row), ensure_ascii=False, default=str) + "\n").encode("utf-8"))


def _parquet(path: Path, out) -> None:
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS):
        _rows(batch.to_pylist(), out)


def _saved_dataset(path: Path, out) -> None:
    import datasets

    dataset = datasets.load_from_disk(str(path))
    if isinstance(dataset, datasets.DatasetDict):
        raise ValueError(f"a DatasetDict (splits {', '.join(dataset)}): give the directory of one split")
    for batch in dataset.with_format("arrow").iter(batch_size=BATCH_ROWS):
        _rows(batch.to_pylist(), out)


WRITERS = {".jsonl.gz": _gzip, ".jsonl.zst": _zstd, ".parquet": _parquet, "datasets": _saved_dataset}
