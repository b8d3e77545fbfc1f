"""Units of work: the input cut into pieces of about ``unit_bytes`` at line boundaries.

Preparation streams one unit at a time per worker (read, validate, weigh, tokenize, pack, spill to the
cache dir), so memory depends on the unit size and the number of workers, not on the corpus. Units are
numbered in input order; that number seeds each unit's random choices, so a unit's output is the same
whichever shard or worker prepares it and whenever (resume).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

@dataclass(frozen=True)
class Unit:
    index: int        # position in the whole input (all shards), seeds the unit's random choices
    path: str
    start: int        # byte offset of its first line
    end: int          # byte offset just past its last line
    first_line: int   # 1-based line number of its first line, for error messages
    source: str = ""  # the input file the lines come from, for messages (``path`` itself for plain jsonl)

    @property
    def size(self) -> int:
        return self.end - self.start

    @property
    def named(self) -> str:
        return self.source or self.path


def plan_units(files: list[Path], unit_bytes: int, sources: list[Path] | None = None) -> list[Unit]:
    """Cut every (jsonl) file into units of at least ``unit_bytes`` (the last of a file may be smaller), at line
    ends; ``sources``: the inputs the files were made from, named in messages."""
    units: list[Unit] = []
    for path, source in zip(files, sources or files):
        start = pos = lines = 0
        first_line = 1
        with open(path, "rb") as fh:
            for raw in fh:  # C-speed line iteration; only lengths are kept
                lines += 1
                pos += len(raw)
                if pos - start >= unit_bytes:
                    units.append(Unit(len(units), str(path), start, pos, first_line, str(source)))
                    start, first_line = pos, lines + 1
        if pos > start:
            units.append(Unit(len(units), str(path), start, pos, first_line, str(source)))
    return units


def unit_lines(unit: Unit) -> Iterator[tuple[int, bytes]]:
    """(line number, raw line) of every line of ``unit``."""
    with open(unit.path, "rb") as fh:
        fh.seek(unit.start)
        data = fh.read(unit.size)
    line_no = unit.first_line
    pos = 0
    while pos < len(data):
        nl = data.find(b"\n", pos)
        end = len(data) if nl < 0 else nl + 1
        yield line_no, data[pos:end]
        line_no += 1
        pos = end
