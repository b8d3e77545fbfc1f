"""Tokenize documents in batches and fit them to ``max_length`` (in the worker preparing a unit of work).

Each document's text (its text pieces joined: what inference feeds the model) goes through the fast
tokenizer, a batch of documents in ONE call (``add_special_tokens=False``); token ids that lead or trail a
document (``<s>``, ``</s>``) are placed around it, and a token is supervised when it overlaps a supervised
character span (offsets are asked for only when some document needs them). The ids are laid out flat in
a numpy array with a same-length supervision mask. Documents are then fitted to ``max_length`` by one of two policies:

- ``"chunk"`` (pretraining): a document longer than ``max_length`` is cut into ``max_length`` chunks
  that all go on; a chunk without any supervised token is dropped and counted.
- ``"turns"`` (SFT): keep the longest prefix of whole turns that fits; if even the first turn does
  not fit, the document is dropped and counted; cut turns are counted too.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import chain
from typing import Sequence

import numpy as np

from .documents import Document

FIT_POLICIES = ("chunk", "turns")



@dataclass
class Drop:
    doc: int          # index of the document in its batch
    reason: str
    tokens: int
    supervised: int


@dataclass
class EncodedBatch:
    """Tokens of a batch of documents (flat) and the chunks of them that go on to splicing."""

    ids: np.ndarray            # int32, every token of every document in the batch
    mask: np.ndarray           # bool, True where the token is supervised
    chunk_doc: np.ndarray      # int64 per kept chunk: index of its document in the batch
    chunk_start: np.ndarray    # int64 per kept chunk: offset into ids
    chunk_len: np.ndarray      # int64 per kept chunk
    doc_tokens: np.ndarray     # int64 per document: tokens before fitting
    doc_supervised: np.ndarray  # int64 per document: supervised tokens before fitting
    doc_split: np.ndarray      # int64 per document: chunks it was cut into (1 when it fits)
    drops: list[Drop] = field(default_factory=list)


def _backend(tokenizer):
    """The Rust tokenizer behind a Hugging Face fast tokenizer, set up as ``tokenizer(texts)`` would be.

    Calling it directly gives the same ids as ``tokenizer(texts, add_special_tokens=False)`` without
    the per-text Python conversion into a ``BatchEncoding`` (offsets, dicts), which cost ~10% of the
    tokenize stage. Like ``tokenizer(...)`` it must not truncate or pad.
    """
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    if backend.truncation is not None:
        backend.no_truncation()
    if backend.padding is not None:
        backend.no_padding()
    if hasattr(tokenizer, "split_special_tokens"):  # what transformers passes to the backend on each call
        backend.encode_special_tokens = bool(tokenizer.split_special_tokens)
    return backend


def encode_texts(tokenizer, texts: list[str], with_offsets: bool = False) -> list:
    """Ids of each text, no special tokens added: exactly ``tokenizer(texts, add_special_tokens=False)``.

    With ``with_offsets`` the backend's ``Encoding`` objects (``.ids``, ``.offsets``) instead of id lists.
    """
    if not texts:
        return []
    backend = _backend(tokenizer)
    if with_offsets:
        return backend.encode_batch(texts, add_special_tokens=False)
    encode = getattr(backend, "encode_batch_fast", backend.encode_batch)  # _fast: no offsets computed
    return [e.ids for e in encode(texts, add_special_tokens=False)]


@dataclass
class _Layout:
    """Every token of a batch of documents, flat, with where its turns and documents end."""

    ids: np.ndarray        # int32
    mask: np.ndarray       # bool: supervised
    turn_end: np.ndarray   # int64 per turn (all documents): token offset where the turn ends
    doc_turns: np.ndarray  # int64 per document: its number of turns


def _split_ends(doc: Document) -> tuple[list, str, list[tuple[int, int]], list[int], list]:
    """(leading id pieces, text, supervised char spans, char offset where each turn ends, trailing id pieces)."""
    pieces = [piece for turn in doc for piece in turn]
    first = next((i for i, (v, _) in enumerate(pieces) if isinstance(v, str)), len(pieces))
    last = max((i + 1 for i, (v, _) in enumerate(pieces) if isinstance(v, str)), default=first)
    if any(not isinstance(v, str) for v, _ in pieces[first:last]):
        raise ValueError("token-id pieces may only lead or trail a document; write inner ones as token text")
    spans, turn_ends, pos, index = [], [], 0, 0
    for turn in doc:
        for value, supervised in turn:
            if first <= index < last:
                if supervised and value:
                    spans.append((pos, pos + len(value)))
                pos += len(value)
            index += 1
        turn_ends.append(pos)
    text = "".join(v for v, _ in pieces[first:last])
    return pieces[:first], text, spans, turn_ends, pieces[last:]


def _text_mask(spans: list[tuple[int, int]], n_chars: int, offsets) -> np.ndarray | bool:
    """Supervised tokens of one text: those overlapping a supervised character span (a bool if all agree)."""
    if not spans:
        return False
    if spans == [(0, n_chars)]:
        return True
    offsets = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    starts, ends = offsets[:, 0], offsets[:, 1]
    mask = np.zeros(len(offsets), dtype=bool)
    for a, b in spans:  # a token that straddles a span edge carries loss: the model must produce it
        mask |= (ends > a) & (starts < b)
    return mask


def _lay_out(tokenizer, docs: Sequence[Document]) -> _Layout:
    """Tokenize each document's text in ONE call and place its leading/trailing token ids around it.

    Each text is what inference feeds the model (``tokenizer(source + target)``, or the whole rendered chat
    template), so no merge differs from it; labels come from character spans through the token offsets.
    """
    parts = [_split_ends(doc) for doc in docs]
    # Offsets cost ~10% of tokenizing: only asked for when some label or turn boundary falls inside a text.
    mixed = any((spans and spans != [(0, len(text))]) or len(turns) > 1 for _, text, spans, turns, _ in parts)
    encodings = encode_texts(tokenizer, [text for _, text, _, _, _ in parts], with_offsets=mixed)
    ids, mask, turn_end, offset = [], [], [], 0
    for (head, text, spans, turn_chars, tail), enc in zip(parts, encodings):
        text_ids = enc.ids if mixed else enc
        text_mask = _text_mask(spans, len(text), enc.offsets if mixed else None)
        ids += [[v for v, _ in head], text_ids, [v for v, _ in tail]]
        mask += [np.array([s for _, s in head], dtype=bool), np.broadcast_to(text_mask, len(text_ids)),
                 np.array([s for _, s in tail], dtype=bool)]
        inner = np.zeros(0, dtype=np.int64)  # token offsets where turns end inside the text
        if len(turn_chars) > 1:
            starts = np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2)[:, 0]
            inner = np.searchsorted(starts, turn_chars[:-1], side="left")
        total = len(head) + len(text_ids) + len(tail)
        turn_end += [offset + len(head) + inner, [offset + total]]
        offset += total
    flat = np.fromiter(chain.from_iterable(ids), dtype=np.int32, count=offset)
    return _Layout(flat, np.concatenate(mask) if mask else np.zeros(0, dtype=bool),
                   np.concatenate(turn_end).astype(np.int64), np.array([len(d) for d in docs], dtype=np.int64))


def encode_documents(tokenizer, docs: Sequence[Document], fit: str, max_length: int) -> EncodedBatch:
    if fit not in FIT_POLICIES:
        raise ValueError(f"unknown fit policy {fit!r}")
    if not docs:
        empty = np.zeros(0, dtype=np.int64)
        return EncodedBatch(np.zeros(0, dtype=np.int32), np.zeros(0, dtype=bool), empty, empty, empty, empty, empty,
                            empty)
    layout = _lay_out(tokenizer, docs)
    ids, mask, turn_end = layout.ids, layout.mask, layout.turn_end
    sup_cum = np.concatenate([[0], np.cumsum(mask, dtype=np.int64)])
    doc_last_turn = np.cumsum(layout.doc_turns) - 1
    doc_end = turn_end[doc_last_turn]
    doc_start = np.concatenate([[0], doc_end[:-1]])
    doc_tokens = doc_end - doc_start
    doc_supervised = sup_cum[doc_end] - sup_cum[doc_start]
    fits = doc_tokens <= max_length
    doc_split = fits.astype(np.int64)

    # Documents that fit are one chunk each (vectorised); only the long ones are cut in Python.
    chunk_doc: list[int] = []
    chunk_start: list[int] = []
    chunk_len: list[int] = []
    drops: list[Drop] = []
    for d in np.flatnonzero(~fits).tolist():
        start, end = int(doc_start[d]), int(doc_end[d])
        if fit == "chunk":
            count = 0
            for s in range(start, end, max_length):
                e = min(s + max_length, end)
                count += 1
                sup = int(sup_cum[e] - sup_cum[s])
                if sup == 0:
                    drops.append(Drop(d, "chunk_without_labels", e - s, 0))
                    continue
                chunk_doc.append(d)
                chunk_start.append(s)
                chunk_len.append(e - s)
            doc_split[d] = count
        else:  # "turns": longest prefix of whole turns that fits
            first_turn = int(doc_last_turn[d - 1]) + 1 if d > 0 else 0
            ends = turn_end[first_turn:int(doc_last_turn[d]) + 1]
            keep = int(np.searchsorted(ends, start + max_length, side="right"))
            if keep == 0:
                drops.append(Drop(d, "first_turn_too_long", end - start, int(doc_supervised[d])))
            else:
                cut = int(ends[keep - 1])
                doc_split[d] = 1
                chunk_doc.append(d)
                chunk_start.append(start)
                chunk_len.append(cut - start)
                drops.append(Drop(d, "turns_truncated", end - cut, int(sup_cum[end] - sup_cum[cut])))
    # Chunks in document order (and, within a document, in token order), as before.
    c_doc = np.concatenate([np.flatnonzero(fits), np.asarray(chunk_doc, dtype=np.int64)])
    c_start = np.concatenate([doc_start[fits], np.asarray(chunk_start, dtype=np.int64)])
    c_len = np.concatenate([doc_tokens[fits], np.asarray(chunk_len, dtype=np.int64)])
    order = np.argsort(c_start, kind="stable")
    drops.sort(key=lambda drop: drop.doc)
    return EncodedBatch(ids, mask, c_doc[order], c_start[order], c_len[order], doc_tokens, doc_supervised, doc_split,
                        drops)
