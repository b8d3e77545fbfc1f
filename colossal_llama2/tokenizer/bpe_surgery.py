"""Byte-level BPE (``tokenizer.json``) surgery: extend a LLaMA-3 / Qwen2 / Mistral-Nemo vocabulary by merges.

New tokens are *merges appended after the base's merges*, never ``added_tokens``: an added token is matched
greedily before BPE and would change how the text around it splits, while an appended merge only ever
applies after every base merge has (BPE applies merges by rank). So every base token keeps its id and its
merges, and text without the new pieces tokenizes exactly as before.

Two sources of merges, as for sentencepiece:
- a list of pieces: each piece gets the merges that build it from the base's tokens (``plan_piece``);
- a corpus: BPE merge learning *continued* from the base's own segmentation (the base's normaliser,
  pre-tokenizer and byte alphabet), as in Purason et al., "Teaching Old Tokenizers New Words" (2025).
  The counting and merging run in the ``tokenizers`` library's BPE trainer: each base token met in the
  corpus is mapped to one stand-in character, so the trainer's "characters" are the base's tokens and its
  merges translate back one to one.
"""
from __future__ import annotations

import functools
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from ..utils.errors import UserInputError
from ..utils.logging import get_logger

logger = get_logger(__name__)

FAST_FILE = "tokenizer.json"
# Stand-in characters for base tokens inside the trainer: supplementary private-use planes (131,068 code
# points), never produced by a byte-level pre-tokenizer (its alphabet is 256 printable characters).
_STAND_INS = [chr(c) for c in range(0xF0000, 0xFFFFE)] + [chr(c) for c in range(0x100000, 0x10FFFE)]


def _contains_byte_level(pre_tokenizer: dict | None) -> bool:
    if not pre_tokenizer:
        return False
    if pre_tokenizer.get("type") == "ByteLevel":
        return True
    return any(_contains_byte_level(p) for p in pre_tokenizer.get("pretokenizers", []) or [])


def describe_unsupported(data: dict) -> str | None:
    """Why this ``tokenizer.json`` cannot be extended here, or None when it is a byte-level BPE."""
    model_type = (data.get("model") or {}).get("type", "unknown")
    if model_type != "BPE":
        return f"its model is {model_type}, not BPE (only byte-level BPE and sentencepiece bases are supported)"
    if not _contains_byte_level(data.get("pre_tokenizer")):
        return ("it is a BPE without a ByteLevel pre-tokenizer (a sentencepiece-style BPE): give the base's "
                "tokenizer.model instead")
    if data["model"].get("continuing_subword_prefix") or data["model"].get("end_of_word_suffix"):
        return "it uses subword prefixes/suffixes, which byte-level BPE bases do not"
    return None


def _parse_merges(raw: list) -> list[tuple[str, str]]:
    """Merges as pairs, from either serialisation (``"a b"`` strings before tokenizers 0.20, pairs after)."""
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else (m[0], m[1]) for m in raw]


@dataclass
class ByteLevelBPE:
    """A byte-level BPE tokenizer.json, with the merges and tokens appended so far."""

    data: dict
    vocab: dict[str, int]
    merges: list[tuple[str, str]]
    added_tokens: dict[str, int]
    base_size: int  # ids 0 .. base_size-1 are the base's (model vocabulary and added tokens)
    appended: list[str] = field(default_factory=list)  # new tokens, in id order
    appended_merges: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path, flag: str) -> "ByteLevelBPE":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise UserInputError(f"{path} is not a tokenizers JSON file ({err})", where=flag) from None
        why = describe_unsupported(data)
        if why:
            raise UserInputError(f"{path}: {why}", where=flag)
        model = data["model"]
        vocab = dict(model["vocab"])
        added = {t["content"]: t["id"] for t in data.get("added_tokens", [])}
        ids = list(vocab.values()) + list(added.values())
        return cls(data=data, vocab=vocab, merges=_parse_merges(model.get("merges", [])), added_tokens=added,
                   base_size=max(ids) + 1)

    @property
    def size(self) -> int:
        return self.base_size + len(self.appended)

    def __contains__(self, token: str) -> bool:
        return token in self.vocab

    def copy_base(self) -> "ByteLevelBPE":
        return ByteLevelBPE(self.data, dict(self.vocab), list(self.merges), self.added_tokens, self.base_size)

    def add_merge(self, left: str, right: str) -> bool:
        """Append the merge ``left right``; True when it makes a new token (else it reaches an existing one)."""
        merged = left + right
        self.merges.append((left, right))
        self.appended_merges.append((left, right))
        if merged in self.vocab:
            return False
        self.vocab[merged] = self.size
        self.appended.append(merged)
        return True

    def to_json(self) -> dict:
        data = json.loads(json.dumps(self.data))
        # The tokenizers library numbers added tokens from the model vocabulary's size on when it loads a file,
        # whatever ids the file gives them; tokens appended after them would push them up. In the model
        # vocabulary too (as GPT-2's file has its <|endoftext|>), they keep their ids. No merge forms them: the
        # pre-tokenizer splits their text apart before BPE.
        vocab = dict(self.vocab)
        for content, token_id in self.added_tokens.items():
            vocab.setdefault(content, token_id)
        data["model"]["vocab"] = vocab
        data["model"]["merges"] = [list(m) for m in self.merges]
        return data

    def to_tokenizer(self):
        from tokenizers import Tokenizer

        return Tokenizer.from_str(json.dumps(self.to_json(), ensure_ascii=False))

    def bpe_model(self):
        """The BPE model alone (no normaliser, pre-tokenizer or added tokens): ``.tokenize(word)``."""
        from tokenizers import models

        m = self.data["model"]
        return models.BPE(self.vocab, list(self.merges), ignore_merges=bool(m.get("ignore_merges", False)),
                          byte_fallback=bool(m.get("byte_fallback", False)), dropout=None, unk_token=m.get("unk_token"),
                          fuse_unk=bool(m.get("fuse_unk", False)))

    def slow_files(self) -> dict[str, bytes]:
        """``vocab.json`` and ``merges.txt`` (GPT-2 / Qwen2 slow-tokenizer files) for this vocabulary."""
        merges = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in self.merges)
        return {"vocab.json": json.dumps(self.vocab, ensure_ascii=False).encode("utf-8"),
                "merges.txt": merges.encode("utf-8")}


def bytes_of(token: str) -> bytes:
    """The raw bytes a byte-level token stands for."""
    return bytes(_byte_decoder()[c] for c in token) if token else b""


@functools.lru_cache(maxsize=None)
def _byte_decoder() -> dict[str, int]:
    """The ByteLevel alphabet (GPT-2's byte <-> printable character table), reversed."""
    from transformers.models.gpt2.tokenization_gpt2 import bytes_to_unicode

    return {char: byte for byte, char in bytes_to_unicode().items()}


def is_whole_text(token: str) -> bool:
    """True when the token's bytes are valid UTF-8 (not part of a character)."""
    try:
        bytes_of(token).decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


class WordSplitter:
    """The base's normaliser + pre-tokenizer: text -> the byte-level words BPE works inside."""

    def __init__(self, tokenizer):
        self.normalizer = tokenizer.normalizer
        self.pre_tokenizer = tokenizer.pre_tokenizer

    def words(self, text: str) -> list[str]:
        if self.normalizer is not None:
            text = self.normalizer.normalize_str(text)
        return [w for w, _ in self.pre_tokenizer.pre_tokenize_str(text)]

    def count(self, texts: Iterable[str]) -> Counter:
        counts: Counter = Counter()
        for text in texts:
            counts.update(self.words(text))
        return counts


def join_merges(parts: list[str], table: ByteLevelBPE) -> list[tuple[str, str]]:
    """Merges that join the adjacent tokens ``parts`` (one word's segmentation) into one token.

    Pairs whose concatenation is already a token are merged first (no new token needed for them), then
    left to right, so a piece costs as few new intermediate tokens as possible.
    """
    parts, merges = list(parts), []
    while len(parts) > 1:
        known = [i for i in range(len(parts) - 1) if parts[i] + parts[i + 1] in table]
        i = known[0] if known else 0
        merges.append((parts[i], parts[i + 1]))
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
    return merges


def learn_merges(word_counts: Counter, table: ByteLevelBPE, num_new_tokens: int, min_frequency: int = 2,
                 surplus: float = 1.25) -> list[tuple[str, str]]:
    """Continue BPE learning on ``word_counts`` from ``table``'s current segmentation; merges best first.

    Asks the trainer for ``surplus`` times the tokens wanted: some learned merges reach tokens that exist
    already (two trainer symbols with the same bytes) and a few may be left out as unreachable later.
    """
    from tokenizers import Tokenizer, models, trainers

    model = table.bpe_model()
    to_char: dict[str, str] = {}
    words: list[tuple[str, int]] = []
    for word, count in word_counts.items():
        tokens = [t.value for t in model.tokenize(word)]
        if len(tokens) < 2:
            continue
        for token in tokens:
            if token not in to_char:
                if len(to_char) == len(_STAND_INS):
                    raise UserInputError(f"the corpus meets more than {len(_STAND_INS)} distinct base tokens",
                                         where="--train_corpus")
                to_char[token] = _STAND_INS[len(to_char)]
        words.append(("".join(to_char[t] for t in tokens), count))
    if not words:
        return []
    to_token = {c: t for t, c in to_char.items()}
    wanted = int(num_new_tokens * surplus) + 64
    trainer = trainers.BpeTrainer(vocab_size=len(to_char) + wanted, min_frequency=min_frequency,
                                  show_progress=False, initial_alphabet=list(to_char.values()), special_tokens=[])
    learner = Tokenizer(models.BPE())

    def occurrences():
        for word, count in words:
            for _ in range(count):
                yield word

    learner.train_from_iterator(occurrences(), trainer=trainer, length=sum(c for _, c in words))
    learned = _parse_merges(json.loads(learner.to_str())["model"]["merges"])
    back = lambda symbol: "".join(to_token[c] for c in symbol)  # noqa: E731
    return [(back(a), back(b)) for a, b in learned]


def unreachable_tokens(tokenizer, table: ByteLevelBPE) -> list[str]:
    """Appended whole-text tokens that the tokenizer does not produce when their own text is encoded.

    Tokens that are part of a character (invalid UTF-8 alone) are intermediates and exempt.
    """
    candidates = [t for t in table.appended if is_whole_text(t)]
    texts = [bytes_of(t).decode("utf-8") for t in candidates]
    encodings = tokenizer.encode_batch(texts, add_special_tokens=False)
    return [t for t, enc in zip(candidates, encodings) if enc.ids != [table.vocab[t]]]


def dependents(merges: list[tuple[str, str]], dead: set[str], appended: set[str]) -> set[str]:
    """``dead`` plus every appended token built, directly or not, from one of them by ``merges`` (in order)."""
    out = set(dead)
    for left, right in merges:
        if (left in out or right in out) and left + right in appended:
            out.add(left + right)
    return out
