"""Optional packages the CPU tests load from a side directory (scripts/install.sh puts torchao there: installed
in site-packages, transformers would import it in every test process)."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

SIDE_DIR = Path(sys.prefix) / "torchao-for-tests"


def torchao_env() -> dict[str, str]:
    """Environment additions that make torchao importable in a child process; skips the test without torchao."""
    spec = importlib.util.find_spec("torchao")
    if spec is not None and not str(spec.origin).startswith(str(SIDE_DIR)):  # installed (a GPU environment)
        return {}
    if not (SIDE_DIR / "torchao").is_dir():
        pytest.skip("torchao is not installed (pip install -e .[gpu], or make install for the side directory)")
    from tests.helpers.distributed import REPO_ROOT

    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), str(SIDE_DIR), os.environ.get("PYTHONPATH")]))}


def import_torchao() -> None:
    """torchao importable in this process too (to unpickle its optimizer states)."""
    if importlib.util.find_spec("torchao") is None:
        torchao_env()
        sys.path.insert(0, str(SIDE_DIR))
