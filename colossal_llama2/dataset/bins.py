"""Category bins: part i of the output holds bin i of every category, so each part is a balanced mix.

A category's sequences are shuffled (seeded) and split into ``num_bins`` near-equal bins, the first
``n % num_bins`` bins holding one more. A category with fewer sequences than bins cannot appear in
every part: its sequences go to the first parts (one each) and the summary lists the parts it misses.
If no category has as many sequences as bins, only as many parts as the largest category has
sequences are written (an empty part would be useless), with a warning.
"""
from __future__ import annotations

import numpy as np


def split_into_bins(n: int, num_bins: int) -> list[np.ndarray]:
    """Index ranges of ``num_bins`` near-equal bins of ``range(n)`` (like ``np.array_split``)."""
    return np.array_split(np.arange(n, dtype=np.int64), num_bins)


def assign_parts(sequences_per_category: dict[str, int], num_bins: int,
                 rng_for: "callable") -> tuple[int, dict[str, list[np.ndarray]]]:
    """Return (number of parts, {category: [shuffled sequence indices of part i, ...]})."""
    largest = max(sequences_per_category.values(), default=0)
    num_parts = max(1, min(num_bins, largest))
    out = {}
    for category, n in sequences_per_category.items():
        order = rng_for(category).permutation(n)
        out[category] = [order[idx] for idx in split_into_bins(n, num_bins)[:num_parts]]
    return num_parts, out
