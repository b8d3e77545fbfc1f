"""Deterministic Chinese-like text for tokenizer tests (nothing downloaded, no third-party corpora).

A Zipf-distributed lexicon of 1–4 character words over a few thousand CJK characters, sentences with
Chinese punctuation, and the things that trip tokenizers: English words, digits, runs of spaces, tabs,
full-width spaces, and rare characters (CJK extension B, emoji) that only byte fallback can encode.
"""
from __future__ import annotations

import random
from itertools import accumulate

COMMON = [chr(c) for c in range(0x4E00, 0x4E00 + 6000, 2)]  # 3,000 "common" characters
RARE = [chr(c) for c in (0x20000, 0x20001, 0x2A6D6, 0x1F600, 0x1F680, 0x3400, 0x9FA5)]
ENGLISH = ("the model data training is of and to in GPU token Hello World Python 2026 AI LLaMA "
           "tokenizer a an on for with").split()
PUNCT = "，。、；：？！“”（）《》"


def _zipf_weights(n: int, s: float = 1.07) -> list[float]:
    return list(accumulate(1.0 / (rank + 1) ** s for rank in range(n)))


class SyntheticChinese:
    def __init__(self, seed: int = 0, lexicon_size: int = 40_000, lexicon_seed: int = 0):
        """Same ``lexicon_seed``, different ``seed``: other sentences of the same "language"."""
        self.rng = random.Random(lexicon_seed)
        char_cum = _zipf_weights(len(COMMON), 0.9)
        lengths = self.rng.choices([1, 2, 3, 4], weights=[2, 6, 2, 1], k=lexicon_size)
        words = {"".join(self.rng.choices(COMMON, cum_weights=char_cum, k=k)) for k in lengths}
        self.words = sorted(words)
        self.rng.shuffle(self.words)
        self.word_cum = _zipf_weights(len(self.words))
        self.rng = random.Random(seed)

    def sentence(self) -> str:
        rng = self.rng
        parts = []
        for _ in range(rng.randint(4, 30)):
            roll = rng.random()
            if roll < 0.04:
                parts.append(" " + rng.choice(ENGLISH) + rng.choice(["", " "]))
            elif roll < 0.07:
                parts.append(str(rng.randint(0, 10 ** rng.randint(1, 6))))
            elif roll < 0.08:
                parts.append(rng.choice(RARE))
            elif roll < 0.16:
                parts.append(rng.choice(PUNCT))
            elif roll < 0.17:
                parts.append(rng.choice(["  ", "\t", "\u3000", "   "]))
            else:
                parts.append(rng.choices(self.words, cum_weights=self.word_cum)[0])
        return "".join(parts) + rng.choice("。！？")

    def lines(self, n: int) -> list[str]:
        out = []
        for _ in range(n):
            line = "".join(self.sentence() for _ in range(self.rng.randint(1, 4)))
            roll = self.rng.random()
            if roll < 0.05:
                line = " " + line  # leading space: the case transformers' converted fast tokenizer gets wrong
            elif roll < 0.08:
                line = "\u3000\u3000" + line
            out.append(line)
        return out
