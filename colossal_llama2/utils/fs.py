"""Atomic outputs: a stage either leaves a complete directory or none at all."""
from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterator

from .errors import UserInputError


def check_output_dir(path: str | os.PathLike, overwrite: bool, flag: str) -> Path:
    """Refuse an existing non-empty output directory unless ``overwrite``; ``flag`` names it in the error."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserInputError(f"{path} exists and is not a directory", where=flag)
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise UserInputError(f"output directory {path} is not empty (pass --overwrite to replace it)", where=flag)
    return path


@contextlib.contextmanager
def atomic_directory(final: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary directory beside ``final``; rename it to ``final`` only on success.

    The temporary directory lives in the same parent so the rename is atomic on one filesystem. On any
    exception it is removed and ``final`` is untouched. With ``overwrite`` an existing ``final`` is
    replaced (moved aside, then deleted after the new one is in place).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if final.exists():
        if not overwrite and final.is_dir() and any(final.iterdir()):
            shutil.rmtree(tmp, ignore_errors=True)
            raise UserInputError(f"output directory {final} appeared while writing; not replacing it")
        old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(final, old)
    os.rename(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file via a temporary file and rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
