"""Which transformers stack is installed: 4.51.3 (colossalai 0.5.0's pin, every plugin) or 5.x (the families
released since). The few places that differ ask here instead of comparing version strings themselves."""
from __future__ import annotations

from functools import lru_cache
from importlib.metadata import version


@lru_cache(maxsize=None)
def transformers_major() -> int:
    return int(version("transformers").split(".")[0])


def transformers_5() -> bool:
    return transformers_major() >= 5


def stack_name() -> str:
    return f"transformers {version('transformers')}"
