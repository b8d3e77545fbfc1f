"""Pack chunks (documents or pieces of documents) into sequences of at most ``max_length`` tokens.

Best-fit decreasing: chunks are taken longest first (ties in a seeded random order, so the result is
deterministic for a seed yet not biased by input order) and each goes into the open sequence whose
free room is the smallest that still holds it, or opens a new sequence. The open sequences are indexed
by free room in a Python int used as a bit set (bit r set = some sequence has exactly r free), so
finding the best fit is one shift and one lowest-set-bit, whatever the number of open sequences.
This typically fills well over 95% of the tokens of a realistic length mix; the summary reports it.
"""
from __future__ import annotations

import numpy as np


def pack_best_fit_decreasing(lengths: np.ndarray, max_length: int, rng: np.random.Generator) -> list[list[int]]:
    """Return sequences as lists of indices into ``lengths``; every length must be in 1..max_length."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if len(lengths) == 0:
        return []
    if lengths.min() < 1 or lengths.max() > max_length:
        raise ValueError("every chunk must hold 1..max_length tokens")
    order = rng.permutation(len(lengths))
    order = order[np.argsort(-lengths[order], kind="stable")]
    sequences: list[list[int]] = []
    by_room: dict[int, list[int]] = {}  # free room -> open sequences with exactly that room
    rooms = 0                           # bit set of the keys of by_room
    for idx in order.tolist():
        n = int(lengths[idx])
        fits = rooms >> n
        if fits:
            room = n + ((fits & -fits).bit_length() - 1)
            bucket = by_room[room]
            seq = bucket.pop()
            if not bucket:
                del by_room[room]
                rooms &= ~(1 << room)
            sequences[seq].append(idx)
            room -= n
        else:
            seq = len(sequences)
            sequences.append([idx])
            room = max_length - n
        if room > 0:
            if room not in by_room:
                by_room[room] = []
                rooms |= 1 << room
            by_room[room].append(seq)
    return sequences


def fill_rate(total_tokens: int, num_sequences: int, max_length: int) -> float:
    """Real tokens / (sequences * max_length): 1.0 means no padding would be needed."""
    return total_tokens / (num_sequences * max_length) if num_sequences else 0.0
