"""Category weights (data mixing): repeat or subsample the documents of a category.

``--category_weights '{"web": 0.5, "code": 2.0}'`` (or a path to such a JSON file). A weight w gives
each document of the category floor(w) copies, plus one more copy to a seeded random round-half-up(frac(w)*n)
of its n documents: 2.0 repeats every document twice, 0.5 keeps a deterministic half, 1.5 keeps all
plus half again, 0 removes the category. Categories not named keep weight 1. Copies are made after
tokenization (a repeated document is tokenized once) and the summary counts them per category.
"""
from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import numpy as np

from ..utils.errors import UserInputError

FLAG = "--category_weights"


def parse_category_weights(value: str | None) -> dict[str, float]:
    if not value:
        return {}
    text = value
    if not value.lstrip().startswith("{"):
        path = Path(value)
        if not path.is_file():
            raise UserInputError(f"{value!r} is neither a JSON object nor a JSON file", where=FLAG)
        text = path.read_text(encoding="utf-8")
    try:
        weights = json.loads(text)
    except json.JSONDecodeError as err:
        raise UserInputError(f"invalid JSON ({err.msg})", where=FLAG) from None
    if not isinstance(weights, dict):
        raise UserInputError("must be a JSON object {category: weight}", where=FLAG)
    for name, w in weights.items():
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise UserInputError(f"weight of {name!r} must be a number >= 0, got {w!r}", where=FLAG)
    return {str(k): float(v) for k, v in weights.items()}


def category_rng(seed: int, category: str, salt: int = 0) -> np.random.Generator:
    """A generator that depends only on the seed and the category (not on other categories)."""
    return np.random.default_rng([seed, zlib.crc32(category.encode("utf-8")), salt])


def copies_for(n: int, weight: float, rng: np.random.Generator) -> np.ndarray:
    """Number of copies of each of ``n`` documents under ``weight`` (see module docstring)."""
    whole = math.floor(weight)
    copies = np.full(n, whole, dtype=np.int64)
    extra = math.floor((weight - whole) * n + 0.5)  # round half up: 0.5 of 9 documents keeps 5
    if extra:
        copies[rng.choice(n, size=extra, replace=False)] += 1
    return copies
