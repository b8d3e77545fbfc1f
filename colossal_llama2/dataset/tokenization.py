"""Tokenize documents in batches, in ``num_proc`` worker processes, and fit them to ``max_length``.

Each batch's text pieces go through the fast tokenizer in ONE call (``add_special_tokens=False``; the
special tokens are pieces of their own), then the ids are laid out flat in a numpy array with a
same-length supervision mask. Documents are then fitted to ``max_length`` by one of two policies:

- ``"chunk"`` (pretraining): a document longer than ``max_length`` is cut into ``max_length`` chunks
  that all go on; a chunk without any supervised token is dropped and counted.
- ``"turns"`` (SFT): keep the longest prefix of whole turns that fits; if even the first turn does
  not fit, the document is dropped and counted; cut turns are counted too.

Workers are forked after the tokenizer is loaded, so it is loaded once; results come back in order,
so the output does not depend on ``num_proc``.
"""
from __future__ import annotations

import multiprocessing as mp
import os
from dataclasses import dataclass, field
from itertools import chain
from typing import Callable, Iterator, Sequence

import numpy as np

from .documents import Document

FIT_POLICIES = ("chunk", "turns")

_TOKENIZER = None  # set in the parent before forking, or by _init_worker under "spawn"


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


def encode_documents(tokenizer, docs: Sequence[Document], fit: str, max_length: int) -> EncodedBatch:
    if fit not in FIT_POLICIES:
        raise ValueError(f"unknown fit policy {fit!r}")
    texts = [value for doc in docs for turn in doc for value, _ in turn if isinstance(value, str)]
    encoded = (tokenizer(texts, add_special_tokens=False, return_attention_mask=False,
                         return_token_type_ids=False)["input_ids"] if texts else [])
    pieces: list = []
    piece_len: list[int] = []
    piece_sup: list[bool] = []
    turn_len: list[int] = []
    doc_turns: list[int] = []
    k = 0
    for doc in docs:
        doc_turns.append(len(doc))
        for turn in doc:
            length = 0
            for value, supervised in turn:
                if isinstance(value, str):
                    ids = encoded[k]
                    k += 1
                else:
                    ids = (value,)
                pieces.append(ids)
                piece_len.append(len(ids))
                piece_sup.append(supervised)
                length += len(ids)
            turn_len.append(length)
    lengths = np.asarray(piece_len, dtype=np.int64)
    total = int(lengths.sum())
    ids = np.fromiter(chain.from_iterable(pieces), dtype=np.int32, count=total)
    mask = np.repeat(np.asarray(piece_sup, dtype=bool), lengths)
    sup_cum = np.concatenate([[0], np.cumsum(mask, dtype=np.int64)])
    turn_end = np.cumsum(np.asarray(turn_len, dtype=np.int64))
    doc_last_turn = np.cumsum(np.asarray(doc_turns, dtype=np.int64)) - 1

    chunk_doc: list[int] = []
    chunk_start: list[int] = []
    chunk_len: list[int] = []
    drops: list[Drop] = []
    n = len(docs)
    doc_tokens = np.zeros(n, dtype=np.int64)
    doc_supervised = np.zeros(n, dtype=np.int64)
    doc_split = np.zeros(n, dtype=np.int64)
    first_turn = 0
    for d in range(n):
        last_turn = int(doc_last_turn[d])
        start = int(turn_end[first_turn - 1]) if first_turn > 0 else 0
        end = int(turn_end[last_turn])
        doc_tokens[d] = end - start
        doc_supervised[d] = sup_cum[end] - sup_cum[start]
        if end - start <= max_length:
            doc_split[d] = 1
            chunk_doc.append(d)
            chunk_start.append(start)
            chunk_len.append(end - start)
        elif fit == "chunk":
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
            ends = turn_end[first_turn:last_turn + 1]
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
        first_turn = last_turn + 1
    return EncodedBatch(ids, mask, np.asarray(chunk_doc, dtype=np.int64), np.asarray(chunk_start, dtype=np.int64),
                        np.asarray(chunk_len, dtype=np.int64), doc_tokens, doc_supervised, doc_split, drops)


def _init_worker(tokenizer_loader: Callable | None) -> None:
    global _TOKENIZER
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one thread per worker: the workers are the parallelism
    if _TOKENIZER is None and tokenizer_loader is not None:
        _TOKENIZER = tokenizer_loader()


def _encode_job(job: tuple[Sequence[Document], str, int]) -> EncodedBatch:
    docs, fit, max_length = job
    return encode_documents(_TOKENIZER, docs, fit, max_length)


def encode_all(tokenizer, docs: Sequence[Document], fit: str, max_length: int, num_proc: int,
               batch_size: int = 256, tokenizer_loader: Callable | None = None) -> Iterator[EncodedBatch]:
    """Yield the ``EncodedBatch`` of each consecutive ``batch_size`` documents, in order."""
    global _TOKENIZER
    jobs = ((docs[i:i + batch_size], fit, max_length) for i in range(0, len(docs), batch_size))
    if num_proc <= 1:
        for job in jobs:
            yield encode_documents(tokenizer, *job)
        return
    _TOKENIZER = tokenizer
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    ctx = mp.get_context(method)
    with ctx.Pool(num_proc, initializer=_init_worker,
                  initargs=(tokenizer_loader if method == "spawn" else None,)) as pool:
        yield from pool.imap(_encode_job, jobs, chunksize=1)
