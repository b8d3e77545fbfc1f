"""Find the input files and read their lines, validating every one.

Each line is decoded as strict UTF-8 and parsed as JSON, then handed to a record parser (pretraining or
SFT) that raises ``BadRecord`` for content it cannot accept. A bad line either stops the run with
``file:line: what is wrong`` (the default) or, with ``skip_bad_lines``, is skipped, counted and listed.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Generic, Iterable, TypeVar

from ..utils.errors import UserInputError, input_error_at

T = TypeVar("T")

# The summary lists at most this many bad lines (all of them are counted).
MAX_LISTED_BAD_LINES = 1000


class BadRecord(ValueError):
    """A parsed JSON value that is not a valid record; the message says what is wrong."""


def list_input_files(data_input_dirs: str, flag: str = "--data_input_dirs") -> list[Path]:
    """The inputs of each comma-separated entry, in the order given: every ``.jsonl``, ``.jsonl.gz``, ``.jsonl.zst``
    and ``.parquet`` file and saved ``datasets`` directory in it (sorted by name), or the entry itself when it is a
    saved dataset (``sources.py``)."""
    from .sources import SUFFIXES, find_inputs

    dirs = [d.strip() for d in data_input_dirs.split(",") if d.strip()]
    if not dirs:
        raise UserInputError("no input directory given", where=flag)
    files: list[Path] = []
    for d in dirs:
        path = Path(d)
        if not path.is_dir():
            raise UserInputError(f"{d} is not a directory", where=flag)
        found = find_inputs(path)
        if not found:
            raise UserInputError(f"no input in {d} (files ending in {', '.join(SUFFIXES)}, or a directory "
                                 f"datasets' save_to_disk wrote)", where=flag)
        files.extend(found)
    return files


@dataclass
class ReadResult(Generic[T]):
    records: list[T] = field(default_factory=list)
    lines_read: int = 0
    blank_lines: int = 0
    bad_lines: int = 0
    bad_line_list: list[dict[str, str]] = field(default_factory=list)
    bad_reasons: dict[str, int] = field(default_factory=dict)


def _short(reason: str) -> str:
    """A reason without its variable details, for counting by kind."""
    return reason.split(":")[0].split(" (")[0]


def read_lines(path: os.PathLike, lines: Iterable[tuple[int, bytes]], parse: Callable[[Any], T],
               skip_bad_lines: bool, result: ReadResult[T], progress: Callable[[int], None] | None = None) -> None:
    """Parse ``(line number, raw bytes)`` lines of ``path`` into ``result``."""
    for line_no, raw in lines:
        result.lines_read += 1
        if progress is not None:
            progress(len(raw))
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            reason = f"not valid UTF-8 (byte {err.start}: {raw[err.start:err.start + 1]!r})"
            _bad(result, path, line_no, reason, skip_bad_lines)
            continue
        if not text.strip():
            result.blank_lines += 1
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            _bad(result, path, line_no, f"invalid JSON ({err.msg} at column {err.colno})", skip_bad_lines)
            continue
        try:
            result.records.append(parse(value))
        except BadRecord as err:
            _bad(result, path, line_no, str(err), skip_bad_lines)


def _bad(result: ReadResult, path: os.PathLike, line_no: int, reason: str, skip: bool) -> None:
    if not skip:
        raise input_error_at(str(path), line_no, reason + " (pass --skip_bad_lines to skip such lines)")
    result.bad_lines += 1
    key = _short(reason)
    result.bad_reasons[key] = result.bad_reasons.get(key, 0) + 1
    if len(result.bad_line_list) < MAX_LISTED_BAD_LINES:
        result.bad_line_list.append({"where": f"{path}:{line_no}", "reason": reason})
