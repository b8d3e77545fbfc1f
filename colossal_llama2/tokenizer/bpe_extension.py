"""Stage 1 for byte-level BPE bases (LLaMA-3, Qwen2/2.5/3, Mistral-Nemo): plan the appended merges, write, check.

The listed pieces come first (file order), then the merges learned from the corpus (best first), until the
budget is spent: ``--vocab_size`` for both together, ``--num_new_pieces`` for the corpus's own. A new token
that the written tokenizer does not produce for its own text is left out with everything built on it,
and the plan is made again without it, so the budget goes to the next candidates.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ..utils.errors import UserInputError
from ..utils.logging import get_logger
from . import hf_files
from .bpe_surgery import (ByteLevelBPE, WordSplitter, bytes_of, dependents, join_merges, learn_merges,
                          unreachable_tokens)
from .corpus import expand_paths, iter_corpus_texts, read_piece_file
from .report import ExtensionReport

logger = get_logger(__name__)

HELD_OUT_EVERY = 20  # every 20th corpus sample is kept out of learning and measures compression


@dataclass
class _Request:
    pieces: list[tuple[str, list[str]]]  # (piece as listed, its byte-level words)
    learned: list[tuple[str, str]]  # merges learned from the corpus, best first
    held_out: list[str]
    budget: int | None  # new tokens in all (--vocab_size), None: no limit
    corpus_budget: int | None  # new tokens from the corpus (--num_new_pieces)
    keep_ascii_merges: bool = False


def _segment(word: str, base_model, ranks: dict[tuple[str, str], int]) -> list[str]:
    """``word`` under the base model, then the appended merges (``ranks``) applied in rank order."""
    parts = [t.value for t in base_model.tokenize(word)]
    while len(parts) > 1:
        pairs = [(ranks.get((parts[i], parts[i + 1])), i) for i in range(len(parts) - 1)]
        best = min(((r, i) for r, i in pairs if r is not None), default=None)
        if best is None:
            return parts
        i = best[1]
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
    return parts


class _Planner:
    """Merges chosen so far on top of the base, against the budgets, with the report of what happened."""

    def __init__(self, base: ByteLevelBPE, base_model, request: _Request, excluded: set[str]):
        self.table, self.base_model, self.request, self.excluded = base.copy_base(), base_model, request, excluded
        self.report = ExtensionReport(source_size=base.size)
        self.ranks: dict[tuple[str, str], int] = {}

    def _room(self, budget: int | None, used: int) -> int | None:
        return None if budget is None else budget - used

    def _append(self, merges: list[tuple[str, str]]) -> int:
        added = 0
        for left, right in merges:
            self.ranks[(left, right)] = len(self.ranks)
            added += self.table.add_merge(left, right)
        return added

    def add_piece(self, words: list[str]) -> None:
        """One listed piece, given as its pre-tokenized words (it must be one)."""
        skipped = self.report.skipped
        if len(words) != 1:
            skipped["spans several pre-tokenized words (BPE never merges across them)"] += 1
            return
        parts = _segment(words[0], self.base_model, self.ranks)
        if len(parts) == 1:
            reason = "already in the source vocabulary" if self.table.vocab[parts[0]] < self.table.base_size \
                else "repeated, or added already as an intermediate of an earlier piece"
            skipped[reason] += 1
            return
        merges = join_merges(parts, self.table)
        results = {a + b for a, b in merges}
        if results & self.excluded:
            skipped["never produced by the tokenizer (see below), or needs such a token"] += 1
            return
        new = sum(1 for a, b in merges if a + b not in self.table)
        room = self._room(self.request.budget, len(self.table.appended))
        if room is not None and new > room:
            skipped["over the --vocab_size budget"] += 1
            return
        piece_is_new = words[0] not in self.table
        self._append(merges)
        self.report.added_from_file += 1
        self.report.added_support += new - piece_is_new

    def add_learned(self) -> None:
        start, skipped, seen = len(self.table.appended), self.report.skipped, set(self.table.merges)
        for left, right in self.request.learned:
            room = [self._room(self.request.budget, len(self.table.appended)),
                    self._room(self.request.corpus_budget, len(self.table.appended) - start)]
            if any(r is not None and r <= 0 for r in room):
                break
            if (left, right) in seen:
                continue
            if left not in self.table or right not in self.table or left + right in self.excluded:
                skipped["learned merge left out: never produced, or built on such a token"] += 1
                continue
            if not self.request.keep_ascii_merges and bytes_of(left + right).isascii():
                skipped["learned merge of ASCII text left out (--keep_ascii_merges keeps it)"] += 1
                continue
            seen.add((left, right))
            self.report.added_from_corpus += self._append([(left, right)])
        wanted = self.request.corpus_budget
        if wanted is not None and len(self.table.appended) - start < wanted:
            logger.warning("the corpus yielded %d new tokens, fewer than the %d asked for",
                           len(self.table.appended) - start, wanted)


def _plan(base: ByteLevelBPE, base_model, request: _Request, excluded: set[str]) -> _Planner:
    planner = _Planner(base, base_model, request, excluded)
    for _, words in request.pieces:
        planner.add_piece(words)
    if request.learned:
        planner.add_learned()
    return planner


def _read_request(base: ByteLevelBPE, base_model, splitter: WordSplitter, expand_tokens_file: str | None,
                  train_corpus: str | None, num_new_pieces: int | None, vocab_size: int | None,
                  keep_ascii_merges: bool) -> _Request:
    pieces = [(raw, splitter.words(raw)) for raw, _ in read_piece_file(expand_tokens_file)] if expand_tokens_file else []
    budget = vocab_size - base.size if vocab_size is not None else None
    request = _Request(pieces=pieces, learned=[], held_out=[], budget=budget, corpus_budget=num_new_pieces,
                       keep_ascii_merges=keep_ascii_merges)
    if not train_corpus:
        return request
    texts = list(iter_corpus_texts(expand_paths(train_corpus, "--train_corpus")))
    if not texts:
        raise UserInputError("the corpus has no non-empty text", where="--train_corpus")
    if len(texts) >= 2 * HELD_OUT_EVERY:
        request.held_out = texts[HELD_OUT_EVERY - 1::HELD_OUT_EVERY]
        texts = [t for i, t in enumerate(texts) if (i + 1) % HELD_OUT_EVERY]
    # Learn on top of the listed pieces' merges, so the corpus continues from the segmentation users get.
    with_pieces = _plan(base, base_model, request, set()).table
    wanted = num_new_pieces if num_new_pieces is not None else budget - len(with_pieces.appended)
    if wanted > 0:
        counts = splitter.count(texts)
        if not keep_ascii_merges:  # ASCII-only words teach only merges that would re-segment English and code
            counts = Counter({w: c for w, c in counts.items() if not bytes_of(w).isascii()})
        logger.info("learning up to %d merges from %d samples (%d distinct words)", wanted, len(texts), len(counts))
        request.learned = learn_merges(counts, with_pieces, wanted)
        if not request.learned:
            raise UserInputError("no new merges to learn: every word of the corpus is one token of the base already, "
                                 "or no pair occurs twice" + ("" if keep_ascii_merges else
                                 " (words of ASCII text only are not learned from without --keep_ascii_merges)"),
                                 where="--train_corpus")
    return request


def _tokens_per_char(tokenizer, texts: list[str]) -> float:
    encodings = tokenizer.encode_batch(texts, add_special_tokens=False)
    return sum(len(e.ids) for e in encodings) / max(1, sum(len(t) for t in texts))


def extend_byte_level(source_dir: Path, target_dir: Path, *, expand_tokens_file: str | None,
                      train_corpus: str | None, num_new_pieces: int | None, vocab_size: int | None,
                      keep_ascii_merges: bool = False, write) -> ExtensionReport:
    """Plan and check the extension of ``source_dir``'s tokenizer.json; ``write(files)`` puts the files in place."""
    base = ByteLevelBPE.load(source_dir / hf_files.FAST_FILE, "--source_tokenizer_dir")
    if vocab_size is not None and vocab_size <= base.size:
        raise UserInputError(f"must exceed the source vocabulary ({base.size} tokens)", where="--vocab_size")
    base_tokenizer = base.to_tokenizer()
    splitter = WordSplitter(base_tokenizer)
    base_model = base.bpe_model()
    request = _read_request(base, base_model, splitter, expand_tokens_file, train_corpus, num_new_pieces,
                            vocab_size, keep_ascii_merges)
    excluded: set[str] = set()
    for _ in range(10):
        planner = _plan(base, base_model, request, excluded)
        tokenizer = planner.table.to_tokenizer()
        dead = unreachable_tokens(tokenizer, planner.table)
        if not dead:
            break
        excluded |= dependents(planner.table.appended_merges, set(dead), set(planner.table.appended))
        logger.info("%d new tokens are never produced for their own text; planning again without them", len(dead))
    report, table = planner.report, planner.table
    report.dropped_unreachable = sorted((bytes_of(t).decode("utf-8", "replace") for t in excluded))
    report.unreachable = dead
    report.final_size = table.size
    if not table.appended:
        raise UserInputError("nothing to add: no piece or merge is new to the base" + _reasons(report),
                             where="--expand_tokens_file" if expand_tokens_file else "--train_corpus")
    if vocab_size is not None and table.size != vocab_size:
        raise UserInputError(f"only {table.size} tokens could be reached: the candidates ran out (give more pieces "
                             f"or a larger corpus, or a smaller --vocab_size)", where="--vocab_size")
    if request.held_out:
        report.compression.append((f"{len(request.held_out)} held-out corpus samples",
                                   _tokens_per_char(base_tokenizer, request.held_out),
                                   _tokens_per_char(tokenizer, request.held_out)))
    write(_output_files(source_dir, table))
    return report


def _reasons(report: ExtensionReport) -> str:
    return "".join(f"; {reason}: {count}" for reason, count in sorted(report.skipped.items()))


def _output_files(source_dir: Path, table: ByteLevelBPE) -> dict[str, bytes]:
    import json

    files = hf_files.read_byte_level_files(source_dir)
    files[hf_files.FAST_FILE] = json.dumps(table.to_json(), ensure_ascii=False, indent=2).encode("utf-8")
    for name, data in table.slow_files().items():
        if name in files:
            files[name] = data
    return files

