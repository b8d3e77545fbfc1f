"""Small argparse helpers shared by the command-line scripts."""
from __future__ import annotations

import argparse


def str2bool(value: str | bool) -> bool:
    """Accept ``--flag True`` / ``--flag false`` / ``--flag 1`` as the upstream README's commands write them."""
    if isinstance(value, bool):
        return value
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "y", "on"):
        return True
    if lowered in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false), got {value!r}")
