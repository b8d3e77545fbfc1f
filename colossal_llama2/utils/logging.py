"""The project's one logger.

Every module logs through ``get_logger()``. In a multi-process run only rank 0 prints INFO; other ranks
print WARNING and above, prefixed with their rank, so a problem on one rank is never hidden.
"""
from __future__ import annotations

import logging
import os
import sys

LOGGER_NAME = "colossal_llama2"


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def get_logger(name: str | None = None) -> logging.Logger:
    """Return the project logger (or a child of it: ``get_logger(__name__)``)."""
    root = logging.getLogger(LOGGER_NAME)
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        rank = _rank()
        prefix = f"[rank {rank}] " if int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""
        handler.setFormatter(logging.Formatter(f"%(asctime)s {prefix}%(levelname)s %(message)s", "%H:%M:%S"))
        root.addHandler(handler)
        root.setLevel(logging.INFO if rank == 0 else logging.WARNING)
        root.propagate = False
    if name is None or name == LOGGER_NAME:
        return root
    if name.startswith(LOGGER_NAME + "."):
        name = name[len(LOGGER_NAME) + 1 :]
    return root.getChild(name)
