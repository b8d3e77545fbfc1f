"""Append pieces to a sentencepiece model proto so that both encoders actually use them.

Why this is more than ``pieces.append``:

* BPE (sentencepiece's encoder and the Hugging Face fast tokenizer alike) can only produce a piece by
  merging two adjacent symbols that are pieces themselves. A 4-character word whose 2- and 3-character
  parts are absent is never produced: it would sit in the vocabulary unused. The fast tokenizer is
  stricter still: the converter only creates a merge ``(left, right)`` when *both* halves are pieces, so a
  word whose characters are missing (Chinese under LLaMA-2, which falls back to bytes) is unreachable
  there while sentencepiece itself could still produce it -- slow and fast would disagree.
  ``plan_piece`` therefore adds the missing characters first and then, if the word is still not produced
  from its characters, the intermediate pieces (balanced halves) that make it so.
* Scores: every new piece scores below every existing normal piece, so an existing merge always wins
  and text the old model could already encode without new pieces keeps its ids. Scores are distinct
  (strictly decreasing in append order) *as stored*, i.e. as float32, because sentencepiece and the
  Hugging Face BPE break score ties differently (sentencepiece: leftmost pair; HF: merge rank). This is
  not automatic: LLaMA-2 gives its whitespace pieces a score of -1e9, where float32 values are 64 apart,
  so "minimum - 1, - 2, ..." collapses into runs of 64 equal scores -- which is what made the fast and
  slow tokenizers disagree on about 1% of Chinese lines. ``_score_below`` steps in float32.
* Unigram models need no intermediates (Viterbi considers every piece); new pieces get slightly
  decreasing scores just below the old minimum.

Encoding is simulated here in pure Python with the fast tokenizer's (stricter) rule, which on a
vocabulary whose pieces' characters are all pieces coincides with sentencepiece's.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sentencepiece import sentencepiece_model_pb2 as sp_pb2

from ..utils.errors import UserInputError

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
UNIGRAM, BPE = 1, 2
MODEL_TYPE_NAMES = {1: "UNIGRAM", 2: "BPE", 3: "WORD", 4: "CHAR"}
WHITESPACE_SYMBOL = "\u2581"  # sentencepiece's stand-in for a space ("▁")
UNIGRAM_SCORE_STEP = 1e-4  # small: a unigram score is a log-probability, later pieces must not be starved


def parse_model(data: bytes, where: str) -> sp_pb2.ModelProto:
    """Parse and validate a serialized sentencepiece model (BPE or unigram)."""
    proto = sp_pb2.ModelProto()
    try:
        proto.ParseFromString(data)
    except Exception as err:  # protobuf raises DecodeError and a few others
        raise UserInputError(f"not a sentencepiece model ({err.__class__.__name__}: {err})", where=where) from None
    if len(proto.pieces) == 0:
        raise UserInputError("not a sentencepiece model (no pieces)", where=where)
    model_type = proto.trainer_spec.model_type
    if model_type not in (UNIGRAM, BPE):
        name = MODEL_TYPE_NAMES.get(model_type, str(model_type))
        raise UserInputError(f"sentencepiece model type {name} is not supported (only BPE and UNIGRAM)", where=where)
    return proto


def normalize_piece(text: str) -> str:
    """A piece as the user writes it -> as sentencepiece stores it (spaces become '▁')."""
    return text.replace(" ", WHITESPACE_SYMBOL)


@dataclass
class Vocabulary:
    """The pieces of a model plus the ones being appended; knows the next score to hand out."""

    model_type: int
    pieces: dict[str, int] = field(default_factory=dict)  # piece -> type
    scores: dict[str, float] = field(default_factory=dict)  # NORMAL pieces only: the merge candidates
    next_score: float = 0.0
    appended: list[tuple[str, float]] = field(default_factory=list)

    @classmethod
    def from_proto(cls, proto: sp_pb2.ModelProto) -> "Vocabulary":
        vocab = cls(model_type=proto.trainer_spec.model_type)
        for p in proto.pieces:
            vocab.pieces[p.piece] = p.type
            if p.type == NORMAL:
                vocab.scores[p.piece] = p.score
        normal_scores = list(vocab.scores.values()) or [0.0]
        vocab.next_score = _score_below(min(normal_scores), 1.0)
        return vocab

    def __contains__(self, piece: str) -> bool:
        return piece in self.pieces

    def add(self, piece: str) -> None:
        score = self.next_score
        self.next_score = _score_below(score, 1.0 if self.model_type == BPE else UNIGRAM_SCORE_STEP)
        self.pieces[piece] = NORMAL
        self.scores[piece] = score
        self.appended.append((piece, score))


def _score_below(score: float, step: float) -> float:
    """``score - step`` as a float32, or the next float32 below ``score`` when that rounds back to it."""
    current = np.float32(score)
    lower = np.float32(float(current) - step)
    if lower >= current:
        lower = np.nextafter(current, np.float32(-np.inf))
    return float(lower)


def bpe_encode(text: str, scores: dict[str, float], extra: dict[str, float] | None = None) -> list[str]:
    """Greedy BPE as the fast tokenizer does it: merge the best-scoring adjacent pair of pieces.

    ``text`` must already be in piece form ('▁' for spaces, no dummy prefix). Characters that are not
    pieces stay single symbols and never merge (the fast tokenizer sends them to byte fallback).
    """
    extra = extra or {}

    def score(piece: str) -> float | None:
        if piece in extra:
            return extra[piece]
        return scores.get(piece)

    symbols = list(text)
    while len(symbols) > 1:
        best, best_i = None, -1
        for i in range(len(symbols) - 1):
            left, right = symbols[i], symbols[i + 1]
            if score(left) is None or score(right) is None:
                continue
            s = score(left + right)
            if s is not None and (best is None or s > best):
                best, best_i = s, i
        if best is None:
            break
        symbols[best_i : best_i + 2] = [symbols[best_i] + symbols[best_i + 1]]
    return symbols


def _following_scores(first: float, count: int) -> list[float]:
    scores = [first]
    while len(scores) < count:
        scores.append(_score_below(scores[-1], 1.0))
    return scores


def _balanced_nodes(symbols: list[str]) -> list[str]:
    """Internal nodes (multi-symbol concatenations) of a balanced binary tree over ``symbols``, children first."""
    if len(symbols) <= 1:
        return []
    mid = len(symbols) // 2
    return _balanced_nodes(symbols[:mid]) + _balanced_nodes(symbols[mid:]) + ["".join(symbols)]


def plan_piece(piece: str, vocab: Vocabulary) -> list[str]:
    """Pieces to append (in order) so that BPE encodes ``piece`` alone to itself: chars, piece, intermediates.

    For unigram models only the piece itself is needed. Returns [] when ``piece`` is already there.
    """
    if piece in vocab:
        return []
    if vocab.model_type != BPE:
        return [piece]
    if len(piece) == 1:
        return [piece]
    plan = [ch for ch in dict.fromkeys(piece) if ch not in vocab]  # unique characters, in order
    plan.append(piece)
    # Scores these would get (the same float32 steps as ``Vocabulary.add``), to simulate before committing.
    scores = _following_scores(vocab.next_score, len(plan) + len(piece))
    trial = {p: scores[i] for i, p in enumerate(plan)}
    symbols = bpe_encode(piece, vocab.scores, trial)
    if symbols == [piece]:
        return plan
    # Stuck at ``symbols`` (no applicable merge). New merges score below everything so far, so they fire
    # only after the existing ones are exhausted -- exactly at this stuck state. Balanced halves first;
    # if some older piece interferes, fall back to a left fold, which always completes.
    for nodes in (_balanced_nodes(symbols), [
            "".join(symbols[: k + 1]) for k in range(1, len(symbols))]):
        # dict.fromkeys: a repeated half ("ABAB" -> "AB", "AB") is one piece, appended once.
        nodes = [n for n in dict.fromkeys(nodes) if n != piece and n not in vocab and n not in trial]
        trial2 = dict(trial)
        for n in nodes:
            trial2[n] = scores[len(trial2)]
        if bpe_encode(piece, vocab.scores, trial2) == [piece]:
            return plan + nodes
    # Only when a character exists as a non-normal piece (e.g. user-defined): the caller's check of the
    # written model reports the piece as unreachable.
    return plan


def append_to_proto(proto: sp_pb2.ModelProto, appended: list[tuple[str, float]]) -> None:
    """Append ``(piece, score)`` as NORMAL pieces after every existing piece; nothing else changes."""
    for piece, score in appended:
        new = proto.pieces.add()
        new.piece = piece
        new.score = score
        new.type = NORMAL


def processor_without_dummy_prefix(proto: sp_pb2.ModelProto):
    """A SentencePieceProcessor that encodes text exactly as given (no '▁' prepended): for single pieces."""
    import sentencepiece as spm

    copy = sp_pb2.ModelProto()
    copy.CopyFrom(proto)
    copy.normalizer_spec.add_dummy_prefix = False
    return spm.SentencePieceProcessor(model_proto=copy.SerializeToString())


def unreachable_pieces(proto: sp_pb2.ModelProto, pieces: list[str]) -> list[str]:
    """Pieces that sentencepiece does not encode to themselves when given alone."""
    sp = processor_without_dummy_prefix(proto)
    bad = []
    for piece in pieces:
        ids = sp.encode(piece.replace(WHITESPACE_SYMBOL, " "))
        if ids != [sp.piece_to_id(piece)]:
            bad.append(piece)
    return bad
