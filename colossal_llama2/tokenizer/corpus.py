"""Reading the text inputs of the tokenizer stage: piece lists and corpora (jsonl or plain text).

A corpus record is a jsonl object with a ``text`` field, or the pretraining format's ``source`` and
``target`` (joined, as the model sees them); a ``.txt`` file gives one sample per non-empty line. Every
malformed line is an error naming ``file:line`` -- nothing is skipped silently.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator

from ..utils.errors import UserInputError, input_error_at

CORPUS_SUFFIXES = (".jsonl", ".json", ".txt")


def expand_paths(spec: str | list[str], flag: str) -> list[Path]:
    """Comma-separated (or listed) files and directories -> the corpus files, sorted within each directory."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    files: list[Path] = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in CORPUS_SUFFIXES)
            if not found:
                raise UserInputError(f"no {'/'.join(CORPUS_SUFFIXES)} files under {path}", where=flag)
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise UserInputError(f"{path} does not exist", where=flag)
    if not files:
        raise UserInputError("no input files given", where=flag)
    return files


def _json_lines(path: Path) -> Iterator[tuple[int, dict]]:
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise input_error_at(str(path), line_no, f"malformed JSON ({err.msg})") from None
            if not isinstance(record, dict):
                raise input_error_at(str(path), line_no, "expected a JSON object")
            yield line_no, record


def record_text(record: dict, path: Path, line_no: int) -> str:
    """The text of one corpus record: ``text``, or ``source`` + ``target``."""
    if "text" in record:
        text = record["text"]
        if not isinstance(text, str):
            raise input_error_at(str(path), line_no, "field 'text' must be a string")
        return text
    if "source" in record or "target" in record:
        parts = [record.get("source", ""), record.get("target", "")]
        if not all(isinstance(p, str) for p in parts):
            raise input_error_at(str(path), line_no, "fields 'source' and 'target' must be strings")
        return "".join(parts)
    raise input_error_at(str(path), line_no, "record has no 'text' nor 'source'/'target' field")


def iter_corpus_texts(files: list[Path]) -> Iterator[str]:
    """Every sample's text, file by file (.txt: one sample per non-empty line)."""
    for path in files:
        if path.suffix == ".txt":
            with open(path, encoding="utf-8") as f:
                for line in f:
                    line = line.rstrip("\n")
                    if line.strip():
                        yield line
        else:
            for line_no, record in _json_lines(path):
                yield record_text(record, path, line_no)


def read_piece_file(path: str | os.PathLike) -> list[tuple[str, int]]:
    """``{"piece": "你好"}`` per line -> ``[(piece, line_no), ...]`` in file order, raw (not normalised)."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path} does not exist", where="--expand_tokens_file")
    pieces = []
    for line_no, record in _json_lines(path):
        piece = record.get("piece")
        if not isinstance(piece, str):
            raise input_error_at(str(path), line_no, "expected {\"piece\": \"...\"} with a string value")
        if not piece.strip():
            raise input_error_at(str(path), line_no, f"empty or whitespace-only piece {piece!r}")
        pieces.append((piece, line_no))
    return pieces


DEFAULT_MAX_CORPUS_CHARS = 30_000_000
PROBE_BYTES = 1 << 20


def sample_corpus_texts(files: list[Path], max_chars: int | None, seed: int = 0) -> Iterator[str]:
    """The corpus's samples, streamed, with a progress bar over the bytes read; at most ``max_chars`` characters in
    all, drawn evenly from the whole corpus.

    Each sample is kept with probability max_chars / (the corpus's estimated characters: its bytes times the
    characters per byte of its first MiB), with a seeded generator, until ``max_chars`` are kept; a corpus below
    the bound is read whole. Memory then depends on the bound, not on the corpus.
    """
    import random

    from tqdm import tqdm

    total_bytes = sum(p.stat().st_size for p in files)
    keep = 1.0
    if max_chars is not None and max_chars > 0:
        keep = min(1.0, max_chars / max(1.0, total_bytes * _chars_per_byte(files)))
    rng, kept = random.Random(seed), 0
    with tqdm(total=total_bytes, unit="B", unit_scale=True, desc="corpus", leave=False) as bar:
        for path in files:
            for text in iter_corpus_texts([path]):
                bar.update(len(text.encode("utf-8")) + 1)
                if keep < 1.0 and rng.random() >= keep:
                    continue
                yield text
                kept += len(text)
                if max_chars and kept >= max_chars:
                    return


def _chars_per_byte(files: list[Path]) -> float:
    """Characters of text per byte of file, from the corpus's first MiB (JSON overhead and UTF-8 width included)."""
    chars = size = 0
    for path in files:
        for text in iter_corpus_texts([path]):
            chars += len(text)
            size += len(text.encode("utf-8")) + (len(text) // 8 + 16 if path.suffix != ".txt" else 1)
            if size >= PROBE_BYTES:
                return chars / size
    return chars / size if size else 1.0
