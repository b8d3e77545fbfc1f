"""Reading prepared samples back: the runs of supervised tokens (labels that are not -100)."""
from __future__ import annotations

from colossal_llama2.dataset.schema import IGNORE_INDEX


def supervised_runs(ids: list[int], labels: list[int]) -> list[list[int]]:
    """The maximal runs of consecutive supervised tokens; every supervised label equals its token."""
    runs, current = [], []
    for token, label in zip(ids, labels):
        if label != IGNORE_INDEX:
            assert label == token
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return runs
