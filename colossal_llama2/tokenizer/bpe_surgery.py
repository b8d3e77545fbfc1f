"""BPE ``tokenizer.json`` surgery: extend a vocabulary by merges, for both BPE alphabets.

- byte-level (LLaMA-3, Qwen2/3, Mistral-Nemo, gpt-oss): a ByteLevel pre-tokenizer maps every byte to a printable
  character, so every text is spelled in the base's 256 symbols;
- sentencepiece-style, "metaspace" (LLaMA-2 and Mistral v1-v3 converted to ``tokenizer.json``, Gemma): spaces are
  ``▁``, a word starts with it, and a character the vocabulary lacks falls back to ``<0xXX>`` byte tokens. Such a
  character gets a token of its own (a vocabulary entry, no merge) before any merge is built on it.

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
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..utils.errors import UserInputError
from ..utils.logging import get_logger

logger = get_logger(__name__)

FAST_FILE = "tokenizer.json"
# Stand-in characters for base tokens inside the trainer: supplementary private-use planes (131,068 code
# points), never produced by a byte-level pre-tokenizer (its alphabet is 256 printable characters).
_STAND_INS = [chr(c) for c in range(0xF0000, 0xFFFFE)] + [chr(c) for c in range(0x100000, 0x10FFFE)]


BYTE_LEVEL, METASPACE = "byte-level", "sentencepiece-style"
SPACE = "\u2581"  # '▁'
_BYTE_TOKEN = re.compile(r"<0x[0-9A-F]{2}>")


def _contains(component: dict | None, kind: str, pattern: str | None = None) -> bool:
    """Whether a normalizer/pre-tokenizer (or one in its Sequence) is of ``kind`` (a Replace: of ``pattern``)."""
    if not component:
        return False
    if component.get("type") == kind and (pattern is None or (component.get("pattern") or {}).get("String") == pattern):
        return True
    children = component.get("pretokenizers") or component.get("normalizers") or []
    return any(_contains(c, kind, pattern) for c in children)


def alphabet_of(data: dict) -> str | None:
    """``BYTE_LEVEL``, ``METASPACE``, or None for a tokenizer.json that is neither."""
    if _contains(data.get("pre_tokenizer"), "ByteLevel"):
        return BYTE_LEVEL
    if (data.get("model") or {}).get("byte_fallback") and (
            _contains(data.get("normalizer"), "Replace", " ") or _contains(data.get("pre_tokenizer"), "Metaspace")):
        return METASPACE
    return None


def describe_unsupported(data: dict) -> str | None:
    """Why this ``tokenizer.json`` cannot be extended here, or None when it is a BPE of a known alphabet."""
    model_type = (data.get("model") or {}).get("type", "unknown")
    if model_type != "BPE":
        return f"its model is {model_type}, not BPE (only BPE tokenizer.json and sentencepiece bases are supported)"
    if alphabet_of(data) is None:
        return ("it is a BPE neither byte-level (a ByteLevel pre-tokenizer) nor sentencepiece-style (spaces as "
                "'\u2581' and byte fallback); give the base's tokenizer.model if it has one")
    if data["model"].get("continuing_subword_prefix") or data["model"].get("end_of_word_suffix"):
        return "it uses subword prefixes/suffixes, which these BPE bases do not"
    return None


def _parse_merges(raw: list) -> list[tuple[str, str]]:
    """Merges as pairs, from either serialisation (``"a b"`` strings before tokenizers 0.20, pairs after)."""
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else (m[0], m[1]) for m in raw]


@dataclass
class BPETable:
    """A BPE tokenizer.json (byte-level or sentencepiece-style), with the merges and tokens appended so far."""

    data: dict
    vocab: dict[str, int]
    merges: list[tuple[str, str]]
    added_tokens: dict[str, int]
    base_size: int  # ids 0 .. base_size-1 are the base's (model vocabulary and added tokens)
    alphabet: str = BYTE_LEVEL
    appended: list[str] = field(default_factory=list)  # new tokens, in id order
    appended_merges: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path, flag: str) -> "BPETable":
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
                   base_size=max(ids) + 1, alphabet=alphabet_of(data))

    @property
    def size(self) -> int:
        return self.base_size + len(self.appended)

    def __contains__(self, token: str) -> bool:
        return token in self.vocab

    def copy_base(self) -> "BPETable":
        return BPETable(self.data, dict(self.vocab), list(self.merges), self.added_tokens, self.base_size,
                        self.alphabet)

    def text_of(self, token: str) -> str:
        """The text a token stands for (a byte-level token that is part of a character: its bytes, replaced)."""
        if self.alphabet == METASPACE:
            return token.replace(SPACE, " ")
        return bytes_of(token).decode("utf-8", "replace")

    def is_whole_text(self, token: str) -> bool:
        """True when the token stands for whole characters (not a byte of one)."""
        if self.alphabet == METASPACE:
            return not _BYTE_TOKEN.search(token)
        return is_whole_text(token)

    def add_token(self, token: str) -> None:
        """Append a token no merge forms: a character the sentencepiece-style base spelled in bytes."""
        self.vocab[token] = self.size
        self.appended.append(token)

    def missing_characters(self, word: str) -> list[str]:
        """Characters of ``word`` that are not tokens (sentencepiece-style bases spell them in bytes)."""
        if self.alphabet != METASPACE:
            return []
        return list(dict.fromkeys(c for c in word if c not in self.vocab))

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
    """The ByteLevel alphabet (GPT-2's byte <-> printable character table), reversed.

    The table (``tokenizers``' ByteLevel uses the same): printable Latin-1 bytes stand for themselves, the other 68
    bytes for the code points from 256 on, in byte order. transformers moved its copy between releases."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    table = {b: chr(b) for b in printable} | {b: chr(256 + n) for n, b in enumerate(others)}
    return {char: byte for byte, char in table.items()}


def is_whole_text(token: str) -> bool:
    """True when the token's bytes are valid UTF-8 (not part of a character)."""
    try:
        bytes_of(token).decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


class WordSplitter:
    """The base's normaliser + pre-tokenizer: text -> the words BPE works inside (byte-level), or the words it
    learns within (sentencepiece-style: a word begins at each '▁', as sentencepiece splits by whitespace)."""

    def __init__(self, tokenizer, alphabet: str = BYTE_LEVEL):
        self.normalizer = tokenizer.normalizer
        self.pre_tokenizer = tokenizer.pre_tokenizer
        self.alphabet = alphabet

    def _pre_tokenize(self, text: str) -> list[str]:
        words = [w for w, _ in self.pre_tokenizer.pre_tokenize_str(text)] if self.pre_tokenizer else [text]
        if self.alphabet == METASPACE:
            words = [part for w in words for part in re.split(f"(?={SPACE})", w) if part]
        return words

    def words(self, text: str) -> list[str]:
        if self.normalizer is not None:
            text = self.normalizer.normalize_str(text)
        return self._pre_tokenize(text)

    def piece_words(self, piece: str) -> list[str]:
        """A listed piece's words. Sentencepiece-style: its spaces are word starts ('▁'), and no dummy prefix is
        added (a piece mid-sentence has none); a piece must then be one word."""
        if self.alphabet == METASPACE:
            words = self._pre_tokenize(piece.replace(" ", SPACE))
            return [piece.replace(" ", SPACE)] if len(words) == 1 else words
        return self.words(piece)


def join_merges(parts: list[str], table: BPETable) -> list[tuple[str, str]]:
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


def _learnable_runs(tokens: list[str], table: BPETable) -> list[list[str]]:
    """A word's tokens as the runs merges may be learned in: the whole word, except that a sentencepiece-style
    base's byte-fallback tokens (a character it lacks) are never merged, so they split the word."""
    if table.alphabet != METASPACE:
        return [tokens]
    runs, run = [], []
    for token in tokens:
        if _BYTE_TOKEN.fullmatch(token):
            runs, run = runs + [run], []
        else:
            run.append(token)
    return runs + [run]


def learn_merges(word_counts: Counter, table: BPETable, num_new_tokens: int, min_frequency: int = 2,
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
        for tokens in _learnable_runs([t.value for t in model.tokenize(word)], table):
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


def unreachable_tokens(tokenizer, table: BPETable) -> list[str]:
    """Appended whole-text tokens that the tokenizer does not produce when their own text is encoded.

    Tokens that are part of a character (invalid UTF-8 alone) are intermediates and exempt. Sentencepiece-style:
    the token's own spelling through the pre-tokenizer and the BPE model, without the dummy prefix the
    normaliser adds at the start of a text (as for sentencepiece pieces).
    """
    candidates = [t for t in table.appended if table.is_whole_text(t)]
    if table.alphabet == METASPACE:
        splits = [tokenizer.pre_tokenizer.pre_tokenize_str(t) if tokenizer.pre_tokenizer else [(t, None)]
                  for t in candidates]
        return [t for t, words in zip(candidates, splits)
                if len(words) != 1 or [x.id for x in tokenizer.model.tokenize(t)] != [table.vocab[t]]]
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
