"""Stage 1: extend a base tokenizer with new pieces (from a list and/or learned from a corpus).

    python colossal_llama2/tokenizer/init_tokenizer.py --source_tokenizer_dir llama2 \
        --target_tokenizer_dir llama2-zh --expand_tokens_file pieces.jsonl

Two kinds of base, chosen from what the source dir holds: a sentencepiece ``tokenizer.model`` (LLaMA-2,
Mistral-7B, Yi, Baichuan: pieces appended to the model proto, here) or a BPE ``tokenizer.json`` only, byte-level
(LLaMA-3, Qwen2/2.5/3, Mistral-Nemo, gpt-oss) or sentencepiece-style (LLaMA-2 or Mistral converted, Gemma):
merges appended, ``bpe_extension``. Either way new tokens come
after all existing ones (old ids untouched), so a model grown with ``init_model.py`` keeps every old row.
See docs/tokenizer_and_model.md.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from colossal_llama2.tokenizer import bpe_extension, fast_file, hf_files, sp_surgery
from colossal_llama2.tokenizer.corpus import (DEFAULT_MAX_CORPUS_CHARS, expand_paths, read_piece_file,
                                              sample_corpus_texts)
from colossal_llama2.tokenizer.learn_pieces import learn_pieces
from colossal_llama2.tokenizer.report import ExtensionReport
from colossal_llama2.utils.errors import UserInputError, run_cli
from colossal_llama2.utils.fs import atomic_directory, check_output_dir
from colossal_llama2.utils.logging import get_logger

logger = get_logger(__name__)


@dataclass(frozen=True)
class Candidate:
    piece: str    # in sentencepiece form ('▁' for spaces)
    origin: str   # "file" or "corpus"


@dataclass
class _Plan:
    """Pieces chosen so far, against a budget of new pieces (None: no limit)."""

    vocab: sp_surgery.Vocabulary
    source: set[str]
    budget: int | None
    budget_flag: str
    report: ExtensionReport
    requested: set[str] = field(default_factory=set)

    @property
    def room(self) -> int | None:
        return None if self.budget is None else self.budget - len(self.vocab.appended)

    def add(self, candidate: Candidate, excluded: set[str]) -> None:
        """Add ``candidate`` (plus what it needs) unless present, excluded or over the budget."""
        piece, report = candidate.piece, self.report
        if piece in self.source:
            report.skipped["already in the source vocabulary"] += 1
        elif piece in self.requested:
            report.skipped["repeated"] += 1
        elif piece in self.vocab:
            report.skipped["already added as a character/intermediate of an earlier piece"] += 1
            self.requested.add(piece)
        elif piece in excluded:
            report.skipped["never produced by the encoders (see below)"] += 1
        else:
            plan = sp_surgery.plan_piece(piece, self.vocab)
            if any(p in excluded for p in plan):
                report.skipped["needs a piece that is never produced"] += 1
            elif self.room is not None and len(plan) > self.room:
                report.skipped[f"over the {self.budget_flag} budget"] += 1
            else:
                for p in plan:
                    self.vocab.add(p)
                self.requested.add(piece)
                report.added_support += len(plan) - 1
                if candidate.origin == "file":
                    report.added_from_file += 1
                else:
                    report.added_from_corpus += 1


def extend_tokenizer(source_dir: str | Path, target_dir: str | Path, *, expand_tokens_file: str | None = None,
                     train_corpus: str | None = None, num_new_pieces: int | None = None,
                     train_vocab_size: int | None = None, vocab_size: int | None = None,
                     overwrite: bool = False, keep_ascii_merges: bool = False,
                     max_corpus_chars: int | None = DEFAULT_MAX_CORPUS_CHARS) -> ExtensionReport:
    """Write ``target_dir``: the source tokenizer with pieces appended. Returns what was done."""
    _check_flags(expand_tokens_file, train_corpus, num_new_pieces, vocab_size)
    kind = hf_files.tokenizer_kind(source_dir, "--source_tokenizer_dir")
    source_dir = Path(source_dir)
    target_dir = check_output_dir(target_dir, overwrite, "--target_tokenizer_dir")
    if target_dir.resolve() == source_dir.resolve():
        raise UserInputError("must differ from --source_tokenizer_dir", where="--target_tokenizer_dir")
    if kind == hf_files.BPE_JSON:
        if train_vocab_size is not None:
            raise UserInputError("applies to tokenizer.model bases only (a tokenizer.json base continues its own "
                                 "merge learning)", where="--train_vocab_size")

        def write(files: dict[str, bytes]) -> None:
            with atomic_directory(target_dir, overwrite=overwrite) as tmp:
                hf_files.write_files(tmp, files)

        return bpe_extension.extend_bpe(source_dir, target_dir, expand_tokens_file=expand_tokens_file,
                                               train_corpus=train_corpus, num_new_pieces=num_new_pieces,
                                               vocab_size=vocab_size, keep_ascii_merges=keep_ascii_merges,
                                               max_corpus_chars=max_corpus_chars, write=write)
    if keep_ascii_merges:
        raise UserInputError("applies to tokenizer.json (BPE) bases only", where="--keep_ascii_merges")
    proto = sp_surgery.parse_model((source_dir / hf_files.SP_MODEL_FILE).read_bytes(),
                                   where=str(source_dir / hf_files.SP_MODEL_FILE))
    hf_files.check_no_added_tokens_beyond(source_dir, len(proto.pieces), "--source_tokenizer_dir")
    if vocab_size is not None and vocab_size <= len(proto.pieces):
        raise UserInputError(f"must exceed the source vocabulary ({len(proto.pieces)} pieces)", where="--vocab_size")

    new_budget = vocab_size - len(proto.pieces) if vocab_size is not None else None
    candidates = _candidates(expand_tokens_file, train_corpus, num_new_pieces or new_budget, train_vocab_size,
                             max_corpus_chars)
    files = hf_files.read_tokenizer_files(source_dir)
    with atomic_directory(target_dir, overwrite=overwrite) as tmp:
        report = _build_without_dead_pieces(proto, candidates, files, tmp, new_budget, num_new_pieces)
        if vocab_size is not None and report.final_size != vocab_size:  # inside: nothing is written then
            raise UserInputError(f"only {report.final_size} pieces could be reached: the candidates ran out (give "
                                 f"more pieces or a larger corpus, or a smaller --vocab_size)", where="--vocab_size")
    return report


def _check_flags(expand_tokens_file, train_corpus, num_new_pieces, vocab_size) -> None:
    if not expand_tokens_file and not train_corpus:
        raise UserInputError("give --expand_tokens_file and/or --train_corpus", where="--expand_tokens_file")
    if train_corpus and not num_new_pieces and not vocab_size:
        raise UserInputError("--train_corpus needs --num_new_pieces N (N > 0) or --vocab_size", where="--num_new_pieces")
    if num_new_pieces is not None and num_new_pieces < 0:
        raise UserInputError("must be >= 0", where="--num_new_pieces")
    if num_new_pieces is not None and vocab_size is not None:
        raise UserInputError("give --vocab_size or --num_new_pieces, not both", where="--vocab_size")


def _candidates(expand_tokens_file: str | None, train_corpus: str | None, corpus_budget: int | None,
                train_vocab_size: int | None, max_corpus_chars: int | None) -> list[Candidate]:
    """Requested pieces, highest priority first: the file's in its order, then the corpus's by frequency."""
    out = []
    if expand_tokens_file:
        out += [Candidate(sp_surgery.normalize_piece(raw), "file") for raw, _ in read_piece_file(expand_tokens_file)]
    if train_corpus:
        files = expand_paths(train_corpus, "--train_corpus")
        out += [Candidate(p, "corpus")
                for p in learn_pieces(sample_corpus_texts(files, max_corpus_chars), corpus_budget,
                                      vocab_size=train_vocab_size)]
    return out


def _plan_pieces(proto, candidates: list[Candidate], excluded: set[str], new_budget: int | None,
                 num_new_pieces: int | None) -> _Plan:
    vocab = sp_surgery.Vocabulary.from_proto(proto)
    report = ExtensionReport(source_size=len(proto.pieces))
    plan = _Plan(vocab, set(vocab.pieces), new_budget, "--vocab_size", report)
    for candidate in (c for c in candidates if c.origin == "file"):
        plan.add(candidate, excluded)
    if num_new_pieces is not None:  # the corpus gets its own budget, counted from here
        plan.budget, plan.budget_flag = len(vocab.appended) + num_new_pieces, "--num_new_pieces"
    for candidate in (c for c in candidates if c.origin == "corpus"):
        if plan.room == 0:
            break
        if not candidate.piece.strip(sp_surgery.WHITESPACE_SYMBOL):  # runs of spaces: not language pieces
            report.skipped["learned whitespace-only piece"] += 1
            continue
        plan.add(candidate, excluded)
    if plan.room and any(c.origin == "corpus" for c in candidates):
        logger.warning("the corpus yielded %d fewer pieces than asked for", plan.room)
    return plan


def _build_without_dead_pieces(proto, candidates: list[Candidate], files: dict[str, bytes], out_dir: Path,
                               new_budget: int | None, num_new_pieces: int | None) -> ExtensionReport:
    """Plan, write, and check that both encoders produce every new piece; re-plan without the ones they do not.

    The planner's BPE simulation makes this rare; what it cannot foresee (a requested piece that an older
    piece always pre-empts, a character that exists only as a non-normal piece) is left out, counted and
    named in the report, and its budget goes to the next candidates.
    """
    excluded: set[str] = set()
    for _ in range(10):
        plan = _plan_pieces(proto, candidates, excluded, new_budget, num_new_pieces)
        dead = _write_and_find_dead(proto, plan.vocab.appended, files, out_dir)
        if not dead:
            break
        excluded |= set(dead)
        logger.info("%d new pieces are never produced; planning again without them", len(dead))
    plan.report.dropped_unreachable = sorted(excluded)
    plan.report.unreachable = dead
    plan.report.final_size = len(proto.pieces) + len(plan.vocab.appended)
    return plan.report


def _write_and_find_dead(proto, appended: list[tuple[str, float]], files: dict[str, bytes], out_dir: Path) -> list[str]:
    extended = type(proto)()
    extended.CopyFrom(proto)
    sp_surgery.append_to_proto(extended, appended)
    files = dict(files, **{hf_files.SP_MODEL_FILE: extended.SerializeToString()})
    (out_dir / hf_files.FAST_FILE).unlink(missing_ok=True)  # a previous attempt's
    hf_files.write_files(out_dir, files)
    written_fast = fast_file.fast_files(out_dir)
    if written_fast:
        hf_files.write_files(out_dir, written_fast)
    new_pieces = [p for p, _ in appended]
    dead = set(sp_surgery.unreachable_pieces(extended, new_pieces))
    if written_fast:
        dead |= set(fast_file.unreachable_pieces(out_dir, new_pieces))
    return [p for p in new_pieces if p in dead]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--source_tokenizer_dir", required=True,
                        help="base tokenizer (or model) dir: tokenizer.model + tokenizer_config.json "
                             "(sentencepiece), or tokenizer.json + tokenizer_config.json "
                             "(BPE: byte-level as LLaMA-3, Qwen2/3, Mistral-Nemo; or sentencepiece-style with byte "
                             "fallback, as LLaMA-2's tokenizer.json)")
    parser.add_argument("--target_tokenizer_dir", required=True, help="where to write the extended tokenizer")
    parser.add_argument("--expand_tokens_file", default=None,
                        help='jsonl, one {"piece": "你好"} per line; spaces in a piece stand for word starts '
                             '(tokenizer.json bases: a piece must be one pre-tokenized word)')
    parser.add_argument("--train_corpus", default=None,
                        help="comma-separated jsonl/txt files or dirs to learn pieces from (jsonl: 'text' or "
                             "'source'+'target')")
    parser.add_argument("--num_new_pieces", type=int, default=None,
                        help="with --train_corpus: how many pieces to add from the corpus (characters and "
                             "intermediate merges they need included; tokenizer.json bases: new tokens from learned merges, "
                             "and for a sentencepiece-style one the characters it lacks)")
    parser.add_argument("--vocab_size", type=int, default=None,
                        help="final vocabulary size, exactly (e.g. 69104, or a multiple of 64): the file's pieces in "
                             "list order, then the corpus's by frequency, until it is reached; instead of "
                             "--num_new_pieces")
    parser.add_argument("--train_vocab_size", type=int, default=None,
                        help="with --train_corpus, sentencepiece bases: vocab size of the corpus model "
                             "(default: #chars + 2*N)")
    parser.add_argument("--keep_ascii_merges", action="store_true",
                        help="tokenizer.json (BPE) bases: also learn merges of ASCII-only text from the corpus (an English "
                             "domain corpus); by default they are left out, so English and code tokenize as before")
    parser.add_argument("--max_corpus_chars", type=int, default=DEFAULT_MAX_CORPUS_CHARS,
                        help="learn from at most this many characters of --train_corpus, sampled evenly over the whole "
                             "corpus (seeded), so memory stays bounded whatever its size; 0 reads it all")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty target directory")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    report = extend_tokenizer(args.source_tokenizer_dir, args.target_tokenizer_dir,
                              expand_tokens_file=args.expand_tokens_file, train_corpus=args.train_corpus,
                              num_new_pieces=args.num_new_pieces, train_vocab_size=args.train_vocab_size,
                              vocab_size=args.vocab_size, overwrite=args.overwrite,
                              keep_ascii_merges=args.keep_ascii_merges, max_corpus_chars=args.max_corpus_chars)
    print("\n".join(report.lines()))
    print(f"wrote {args.target_tokenizer_dir}")
    return 0


if __name__ == "__main__":
    run_cli(main)
