"""A reference sentencepiece-BPE encoder in plain Python, for expectations independent of sentencepiece.

Sentencepiece's BPE encoding: start from the characters (a character that is not a piece becomes its UTF-8
bytes as ``<0xXX>`` pieces, byte fallback), then repeatedly merge the adjacent pair whose concatenation is a
normal piece with the highest score (the leftmost on ties), until no pair is a piece. No normalisation and
no dummy prefix: the text is taken as it is, spaces written as ``▁``.
"""
from __future__ import annotations

NORMAL, USER_DEFINED, BYTE = 1, 4, 6


def encode(pieces: list[tuple[str, float, int]], text: str) -> list[int]:
    """``pieces``: (piece, score, type) in id order; returns the ids of ``text``."""
    ids = {p: i for i, (p, _, _) in enumerate(pieces)}
    scores = {p: s for p, s, t in pieces if t in (NORMAL, USER_DEFINED)}
    symbols: list[str] = []
    for char in text.replace(" ", "▁"):
        if char in scores:
            symbols.append(char)
        else:
            symbols += [f"<0x{b:02X}>" for b in char.encode("utf-8")]
    while True:
        best = None
        for i in range(len(symbols) - 1):
            merged = symbols[i] + symbols[i + 1]
            if merged in scores and (best is None or scores[merged] > scores[symbols[best] + symbols[best + 1]]):
                best = i
        if best is None:
            return [ids[s] for s in symbols]
        symbols[best:best + 2] = [symbols[best] + symbols[best + 1]]
