"""Stage 1 for BPE ``tokenizer.json`` bases: plan the appended merges, write, check. Byte-level (LLaMA-3,
Qwen2/2.5/3, Mistral-Nemo, gpt-oss) or sentencepiece-style (LLaMA-2/Mistral converted to tokenizer.json, Gemma).

The listed pieces come first (file order), then the merges learned from the corpus (best first), until the
budget is spent: ``--vocab_size`` for both together, ``--num_new_pieces`` for the corpus's own. A new token
that the written tokenizer does not produce for its own text is left out with everything built on it,
and the plan is made again without it, so the budget goes to the next candidates.

Sentencepiece-style bases spell a character their vocabulary lacks in ``<0xXX>`` bytes: a listed piece brings its
missing characters as tokens of their own, and a corpus adds its missing characters that occur at least twice,
most frequent first, up to half the corpus's budget, before the merges learned on top of them.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ..utils.errors import UserInputError
from ..utils.logging import get_logger
from . import hf_files
from .bpe_surgery import (METASPACE, BPETable, WordSplitter, dependents, join_merges, learn_merges,
                          unreachable_tokens)
from .corpus import DEFAULT_MAX_CORPUS_CHARS, expand_paths, read_piece_file, sample_corpus_texts
from .report import ExtensionReport

logger = get_logger(__name__)

HELD_OUT_EVERY = 20  # every 20th corpus sample is kept out of learning and measures compression
MAX_HELD_OUT = 2000


@dataclass
class _Request:
    pieces: list[tuple[str, list[str]]]  # (piece as listed, its byte-level words)
    learned: list[tuple[str, str]]  # merges learned from the corpus, best first
    learned_chars: list[str]  # sentencepiece-style: the corpus's characters the base spells in bytes, first
    held_out: list[str]
    budget: int | None  # new tokens in all (--vocab_size), None: no limit
    corpus_budget: int | None  # new tokens from the corpus (--num_new_pieces)
    keep_ascii_merges: bool = False


def _base_parts(word: str, table: BPETable, base_model) -> list[str]:
    """``word`` under the base model. Sentencepiece-style: a character the base lacks is a symbol of its own (no
    base merge involves it), so the base model segments the runs between such characters."""
    if table.alphabet != METASPACE:
        return [t.value for t in base_model.tokenize(word)]
    parts, run = [], ""
    for char in word:
        if table.vocab.get(char, table.base_size) < table.base_size:
            run += char
            continue
        parts += [t.value for t in base_model.tokenize(run)] if run else []
        parts.append(char)
        run = ""
    return parts + ([t.value for t in base_model.tokenize(run)] if run else [])


def _segment(word: str, table: BPETable, base_model, ranks: dict[tuple[str, str], int]) -> list[str]:
    """``word`` under the base model, then the appended merges (``ranks``) applied in rank order."""
    parts = _base_parts(word, table, base_model)
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

    def __init__(self, base: BPETable, base_model, request: _Request, excluded: set[str]):
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
        chars = self.table.missing_characters(words[0])
        parts = _segment(words[0], self.table, self.base_model, self.ranks)
        if len(parts) == 1 and not chars:
            reason = "already in the source vocabulary" if self.table.vocab[parts[0]] < self.table.base_size \
                else "repeated, or added already as an intermediate of an earlier piece"
            skipped[reason] += 1
            return
        merges = join_merges(parts, self.table)
        results = {a + b for a, b in merges} | set(chars)
        if results & self.excluded:
            skipped["never produced by the tokenizer (see below), or needs such a token"] += 1
            return
        new = len(chars) + sum(1 for a, b in merges if a + b not in self.table)
        room = self._room(self.request.budget, len(self.table.appended))
        if room is not None and new > room:
            skipped["over the --vocab_size budget"] += 1
            return
        piece_is_new = words[0] not in self.table
        for char in chars:
            self.table.add_token(char)
        self._append(merges)
        self.report.added_from_file += 1
        self.report.added_support += new - piece_is_new

    def _full(self, start: int) -> bool:
        room = [self._room(self.request.budget, len(self.table.appended)),
                self._room(self.request.corpus_budget, len(self.table.appended) - start)]
        return any(r is not None and r <= 0 for r in room)

    def add_learned(self) -> None:
        start, skipped, seen = len(self.table.appended), self.report.skipped, set(self.table.merges)
        for char in self.request.learned_chars:
            if self._full(start):
                break
            if char not in self.table and char not in self.excluded:
                self.table.add_token(char)
                self.report.added_from_corpus += 1
        for left, right in self.request.learned:
            if self._full(start):
                break
            if (left, right) in seen:
                continue
            if left not in self.table or right not in self.table or left + right in self.excluded:
                skipped["learned merge left out: never produced, or built on such a token"] += 1
                continue
            if self.table.alphabet == METASPACE and not self.table.is_whole_text(left + right):
                skipped["learned merge of byte-fallback tokens left out"] += 1
                continue
            if not self.request.keep_ascii_merges and self.table.text_of(left + right).isascii():
                skipped["learned merge of ASCII text left out (--keep_ascii_merges keeps it)"] += 1
                continue
            seen.add((left, right))
            self.report.added_from_corpus += self._append([(left, right)])
        wanted = self.request.corpus_budget
        if wanted is not None and len(self.table.appended) - start < wanted:
            logger.warning("the corpus yielded %d new tokens, fewer than the %d asked for",
                           len(self.table.appended) - start, wanted)


def _plan(base: BPETable, base_model, request: _Request, excluded: set[str]) -> _Planner:
    planner = _Planner(base, base_model, request, excluded)
    for _, words in request.pieces:
        planner.add_piece(words)
    if request.learned:
        planner.add_learned()
    return planner


def _read_request(base: BPETable, base_model, splitter: WordSplitter, expand_tokens_file: str | None,
                  train_corpus: str | None, num_new_pieces: int | None, vocab_size: int | None,
                  keep_ascii_merges: bool, max_corpus_chars: int | None) -> _Request:
    pieces = ([(raw, splitter.piece_words(raw)) for raw, _ in read_piece_file(expand_tokens_file)]
              if expand_tokens_file else [])
    budget = vocab_size - base.size if vocab_size is not None else None
    request = _Request(pieces=pieces, learned=[], learned_chars=[], held_out=[], budget=budget,
                       corpus_budget=num_new_pieces, keep_ascii_merges=keep_ascii_merges)
    if not train_corpus:
        return request
    # Learn on top of the listed pieces' merges, so the corpus continues from the segmentation users get.
    with_pieces = _plan(base, base_model, request, set()).table
    wanted = num_new_pieces if num_new_pieces is not None else budget - len(with_pieces.appended)
    counts, samples = _count_words(splitter, request, sample_corpus_texts(
        expand_paths(train_corpus, "--train_corpus"), max_corpus_chars))
    if wanted > 0:
        if not keep_ascii_merges:  # ASCII-only words teach only merges that would re-segment English and code
            counts = Counter({w: c for w, c in counts.items() if not base.text_of(w).isascii()})
        request.learned_chars = _missing_characters(counts, with_pieces, wanted // 2)
        for char in request.learned_chars:
            with_pieces.add_token(char)
        logger.info("learning up to %d merges from %d samples (%d distinct words)%s", wanted, samples, len(counts),
                    f"; {len(request.learned_chars)} characters the base spells in bytes added first"
                    if request.learned_chars else "")
        request.learned = learn_merges(counts, with_pieces, wanted)
        if not request.learned:
            raise UserInputError("no new merges to learn: every word of the corpus is one token of the base already, "
                                 "or no pair occurs twice" + ("" if keep_ascii_merges else
                                 " (words of ASCII text only are not learned from without --keep_ascii_merges)"),
                                 where="--train_corpus")
    return request


def _count_words(splitter: WordSplitter, request: _Request, texts) -> tuple[Counter, int]:
    """(word counts, samples learned from), streaming: every 20th sample is held out (at most MAX_HELD_OUT of
    them) to measure compression instead."""
    counts: Counter = Counter()
    samples = 0
    for i, text in enumerate(texts, 1):
        if i % HELD_OUT_EVERY == 0 and len(request.held_out) < MAX_HELD_OUT:
            request.held_out.append(text)
            continue
        counts.update(splitter.words(text))
        samples += 1
    if not samples:
        raise UserInputError("the corpus has no non-empty text", where="--train_corpus")
    return counts, samples


def _missing_characters(counts: Counter, table: BPETable, limit: int) -> list[str]:
    """Sentencepiece-style bases: the corpus's characters the vocabulary lacks, seen at least twice, most frequent
    first, at most ``limit``."""
    if table.alphabet != METASPACE:
        return []
    chars: Counter = Counter()
    for word, count in counts.items():
        for char in table.missing_characters(word):
            chars[char] += count * word.count(char)
    return [c for c, n in chars.most_common(max(limit, 0)) if n >= 2]


def _tokens_per_char(tokenizer, texts: list[str]) -> float:
    encodings = tokenizer.encode_batch(texts, add_special_tokens=False)
    return sum(len(e.ids) for e in encodings) / max(1, sum(len(t) for t in texts))


def extend_bpe(source_dir: Path, target_dir: Path, *, expand_tokens_file: str | None,
               train_corpus: str | None, num_new_pieces: int | None, vocab_size: int | None,
               keep_ascii_merges: bool = False, max_corpus_chars: int | None = DEFAULT_MAX_CORPUS_CHARS,
               write) -> ExtensionReport:
    """Plan and check the extension of ``source_dir``'s tokenizer.json; ``write(files)`` puts the files in place."""
    base = BPETable.load(source_dir / hf_files.FAST_FILE, "--source_tokenizer_dir")
    if vocab_size is not None and vocab_size <= base.size:
        raise UserInputError(f"must exceed the source vocabulary ({base.size} tokens)", where="--vocab_size")
    base_tokenizer = base.to_tokenizer()
    splitter = WordSplitter(base_tokenizer, base.alphabet)
    base_model = base.bpe_model()
    request = _read_request(base, base_model, splitter, expand_tokens_file, train_corpus, num_new_pieces,
                            vocab_size, keep_ascii_merges, max_corpus_chars)
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
    report.dropped_unreachable = sorted(table.text_of(t) for t in excluded)
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


def _output_files(source_dir: Path, table: BPETable) -> dict[str, bytes]:
    import json

    files = hf_files.read_byte_level_files(source_dir)
    files[hf_files.FAST_FILE] = json.dumps(table.to_json(), ensure_ascii=False, indent=2).encode("utf-8")
    for name, data in table.slow_files().items():
        if name in files:
            files[name] = data
    return files

