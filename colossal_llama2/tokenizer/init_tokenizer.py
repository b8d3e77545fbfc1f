"""Stage 1: extend a LLaMA sentencepiece tokenizer with new pieces (from a list and/or learned from a corpus).

    python colossal_llama2/tokenizer/init_tokenizer.py --source_tokenizer_dir llama2 \
        --target_tokenizer_dir llama2-zh --expand_tokens_file pieces.jsonl

Pieces are appended after all existing ones (old ids, scores and types untouched), so a model grown
with ``init_model.py`` keeps every old row. See docs/tokenizer_and_model.md.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

if not __package__:  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from colossal_llama2.tokenizer import hf_files, sp_surgery
from colossal_llama2.tokenizer.corpus import expand_paths, iter_corpus_texts, read_piece_file
from colossal_llama2.tokenizer.learn_pieces import learn_pieces
from colossal_llama2.utils.errors import UserInputError, run_cli
from colossal_llama2.utils.fs import atomic_directory, check_output_dir
from colossal_llama2.utils.logging import get_logger

logger = get_logger(__name__)


@dataclass
class ExtensionReport:
    source_size: int = 0
    final_size: int = 0
    added_from_file: int = 0
    added_from_corpus: int = 0
    added_support: int = 0  # characters and intermediate merges that make a requested piece reachable
    skipped: Counter = field(default_factory=Counter)  # reason -> count
    unreachable: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"source vocabulary:          {self.source_size}",
               f"added from --expand_tokens_file: {self.added_from_file}",
               f"added from --train_corpus:  {self.added_from_corpus}",
               f"added as characters/intermediate merges (so BPE can produce the pieces above): {self.added_support}"]
        for reason, count in sorted(self.skipped.items()):
            out.append(f"skipped ({reason}): {count}")
        out.append(f"final vocabulary:           {self.final_size}")
        if self.unreachable:
            out.append(f"WARNING: {len(self.unreachable)} new pieces are never produced by the encoder on their own "
                       f"text, e.g. {self.unreachable[:5]}")
        return out


def _add_planned(vocab: sp_surgery.Vocabulary, piece: str, report: ExtensionReport, source: set[str],
                 requested: set[str], budget: int | None = None) -> bool:
    """Add ``piece`` (plus what it needs) unless present; returns whether it was added."""
    if piece in source:
        report.skipped["already in the source vocabulary"] += 1
        return False
    if piece in requested:
        report.skipped["repeated"] += 1
        return False
    if piece in vocab:
        report.skipped["already added as a character/intermediate of an earlier piece"] += 1
        requested.add(piece)
        return False
    plan = sp_surgery.plan_piece(piece, vocab)
    if budget is not None and len(plan) > budget:
        report.skipped["over the --num_new_pieces budget"] += 1
        return False
    for p in plan:
        vocab.add(p)
    requested.add(piece)
    report.added_support += len(plan) - 1
    return True


def extend_tokenizer(source_dir: str | Path, target_dir: str | Path, *, expand_tokens_file: str | None = None,
                     train_corpus: str | None = None, num_new_pieces: int | None = None,
                     train_vocab_size: int | None = None, overwrite: bool = False) -> ExtensionReport:
    """Write ``target_dir``: the source tokenizer with pieces appended. Returns what was done."""
    if not expand_tokens_file and not train_corpus:
        raise UserInputError("give --expand_tokens_file and/or --train_corpus", where="--expand_tokens_file")
    if train_corpus and not num_new_pieces:
        raise UserInputError("--train_corpus needs --num_new_pieces N (N > 0)", where="--num_new_pieces")
    if num_new_pieces is not None and num_new_pieces < 0:
        raise UserInputError("must be >= 0", where="--num_new_pieces")
    source_dir = hf_files.check_tokenizer_dir(source_dir, "--source_tokenizer_dir")
    target_dir = check_output_dir(target_dir, overwrite, "--target_tokenizer_dir")
    if target_dir.resolve() == source_dir.resolve():
        raise UserInputError("must differ from --source_tokenizer_dir", where="--target_tokenizer_dir")
    proto = sp_surgery.parse_model((source_dir / hf_files.SP_MODEL_FILE).read_bytes(),
                                   where=str(source_dir / hf_files.SP_MODEL_FILE))
    hf_files.check_no_added_tokens_beyond(source_dir, len(proto.pieces), "--source_tokenizer_dir")

    report = ExtensionReport(source_size=len(proto.pieces))
    vocab = sp_surgery.Vocabulary.from_proto(proto)
    source = set(vocab.pieces)
    requested: set[str] = set()

    if expand_tokens_file:
        for raw, _line_no in read_piece_file(expand_tokens_file):
            if _add_planned(vocab, sp_surgery.normalize_piece(raw), report, source, requested):
                report.added_from_file += 1

    if train_corpus:
        files = expand_paths(train_corpus, "--train_corpus")
        learned = learn_pieces(iter_corpus_texts(files), num_new_pieces, vocab_size=train_vocab_size)
        start = len(vocab.appended)
        for piece in learned:
            budget = num_new_pieces - (len(vocab.appended) - start)
            if budget <= 0:
                break
            if not piece.strip(sp_surgery.WHITESPACE_SYMBOL):  # runs of spaces: not language pieces
                report.skipped["learned whitespace-only piece"] += 1
                continue
            if _add_planned(vocab, piece, report, source, requested, budget=budget):
                report.added_from_corpus += 1
        if len(vocab.appended) - start < num_new_pieces:
            logger.warning("the corpus yielded only %d new pieces of the %d asked for",
                           len(vocab.appended) - start, num_new_pieces)

    sp_surgery.append_to_proto(proto, vocab.appended)
    report.final_size = len(proto.pieces)
    report.unreachable = sp_surgery.unreachable_pieces(proto, [p for p, _ in vocab.appended])

    files = hf_files.read_tokenizer_files(source_dir, proto.SerializeToString())
    with atomic_directory(target_dir, overwrite=overwrite) as tmp:
        hf_files.write_files(tmp, files)
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--source_tokenizer_dir", required=True,
                        help="directory with tokenizer.model, tokenizer_config.json, special_tokens_map.json")
    parser.add_argument("--target_tokenizer_dir", required=True, help="where to write the extended tokenizer")
    parser.add_argument("--expand_tokens_file", default=None,
                        help='jsonl, one {"piece": "你好"} per line; spaces in a piece stand for word starts')
    parser.add_argument("--train_corpus", default=None,
                        help="comma-separated jsonl/txt files or dirs to learn pieces from (jsonl: 'text' or "
                             "'source'+'target')")
    parser.add_argument("--num_new_pieces", type=int, default=None,
                        help="with --train_corpus: how many pieces to add from the corpus")
    parser.add_argument("--train_vocab_size", type=int, default=None,
                        help="with --train_corpus: vocab size of the corpus model (default: #chars + 2*N)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty target directory")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    report = extend_tokenizer(args.source_tokenizer_dir, args.target_tokenizer_dir,
                              expand_tokens_file=args.expand_tokens_file, train_corpus=args.train_corpus,
                              num_new_pieces=args.num_new_pieces, train_vocab_size=args.train_vocab_size,
                              overwrite=args.overwrite)
    print("\n".join(report.lines()))
    print(f"wrote {args.target_tokenizer_dir}")
    return 0


if __name__ == "__main__":
    run_cli(main)
