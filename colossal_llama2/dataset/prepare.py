"""Data preparation, shared by pretraining and SFT: jsonl -> tokenized, spliced, category-binned parts.

    read + validate every line (once, streaming)  ->  category weights  ->  tokenize in num_proc workers
    and fit to max_length  ->  pack (pretraining) or one conversation per sample (SFT)  ->  bins/parts
    ->  Arrow parts + jsonl copies, written to temporary dirs and renamed at the end  ->  summary.json

The two kinds differ only in the record parser (documents.py / conversation.py), the fit policy
(chunk / turns) and whether documents are packed; everything else is this one path.
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import multiprocessing as mp
import os
import time
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Sequence

import numpy as np

from ..utils.errors import UserInputError
from ..utils.fs import atomic_directory, check_output_dir
from ..utils.logging import get_logger
from . import conversation
from .bins import assign_parts
from .documents import Record, pretrain_record_parser
from .jsonl_reader import list_input_files, read_records
from .mixing import FLAG as WEIGHTS_FLAG, category_rng, copies_for, parse_category_weights
from .schema import FORMAT, IGNORE_INDEX, SUMMARY_FILE, part_name
from .splice import fill_rate, pack_best_fit_decreasing
from .tokenization import encode_all
from .writer import IntListFormatter, gather_part, save_arrow_part, write_jsonl_part

logger = get_logger(__name__)

KINDS = ("pretrain", "sft")
# Salts for the per-category random streams, so each use is independent of the others.
_SALT_WEIGHTS, _SALT_PACK, _SALT_BINS, _SALT_ROWS = 1, 2, 3, 4


def default_num_proc() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def build_arg_parser(kind: str) -> argparse.ArgumentParser:
    what = "pretraining records {source, target, category}" if kind == "pretrain" else \
        "SFT conversations {messages: [{from, content}, ...], category?}"
    p = argparse.ArgumentParser(description=f"Tokenize jsonl {what} into a category-binned Arrow dataset "
                                            "for train.py. See docs/data_preparation.md.")
    p.add_argument("--data_input_dirs", required=True,
                   help="comma-separated directories; every *.jsonl file in each is read")
    p.add_argument("--tokenizer_dir", required=True, help="Hugging Face tokenizer directory (a fast tokenizer is used)")
    p.add_argument("--data_cache_dir", default=None,
                   help="accepted for compatibility with the original command line; nothing is cached "
                        "(tokenization happens in memory, no intermediate files)")
    p.add_argument("--data_jsonl_output_dir", default=None,
                   help="also write the samples as jsonl here (part-00000.jsonl ...); omitted: no jsonl copy")
    p.add_argument("--data_arrow_output_dir", required=True,
                   help="output: part-00000 ... (datasets.save_to_disk) and summary.json")
    p.add_argument("--max_length", type=int, default=4096, help="maximum tokens per sample (default 4096)")
    p.add_argument("--num_spliced_dataset_bins", type=int, default=10,
                   help="bins per category = output parts; part i holds bin i of every category (default 10)")
    p.add_argument("--num_proc", type=int, default=default_num_proc(),
                   help="tokenizer worker processes (default: the available cores)")
    p.add_argument("--seed", type=int, default=42, help="seed of every random choice (packing ties, bins, weights)")
    p.add_argument("--skip_bad_lines", action="store_true",
                   help="skip invalid lines (counted and listed in the summary) instead of stopping at the first")
    p.add_argument("--overwrite", action="store_true", help="replace existing non-empty output directories")
    p.add_argument(WEIGHTS_FLAG, default=None,
                   help='JSON object or JSON file {category: weight}: 2.0 repeats each document twice, 0.5 keeps '
                        'a deterministic half, 1.5 all plus half; unnamed categories keep 1')
    if kind == "sft":
        p.add_argument("--install_chat_template", action="store_true",
                       help="also store the chat template in --tokenizer_dir/tokenizer_config.json")
    return p


@dataclass
class Options:
    kind: str
    data_input_dirs: str
    tokenizer_dir: str
    data_arrow_output_dir: str
    data_jsonl_output_dir: str | None = None
    data_cache_dir: str | None = None
    max_length: int = 4096
    num_spliced_dataset_bins: int = 10
    num_proc: int = 1
    seed: int = 42
    skip_bad_lines: bool = False
    overwrite: bool = False
    category_weights: str | None = None
    install_chat_template: bool = False

    @classmethod
    def from_args(cls, kind: str, args: argparse.Namespace) -> "Options":
        fields = {k: v for k, v in vars(args).items() if k in cls.__dataclass_fields__}
        return cls(kind=kind, **fields)


def load_tokenizer(tokenizer_dir: str):
    from transformers import AutoTokenizer

    if not Path(tokenizer_dir).is_dir():
        raise UserInputError(f"{tokenizer_dir} is not a directory", where="--tokenizer_dir")
    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, use_fast=True)
    except Exception as err:  # transformers raises many kinds; all mean "not a usable tokenizer dir"
        raise UserInputError(f"cannot load a tokenizer from {tokenizer_dir}: {err}", where="--tokenizer_dir") from None
    if not tokenizer.is_fast:
        raise UserInputError("a fast tokenizer is needed (tokenizers library)", where="--tokenizer_dir")
    if tokenizer.bos_token_id is None or tokenizer.eos_token_id is None:
        raise UserInputError("the tokenizer needs bos and eos tokens", where="--tokenizer_dir")
    return tokenizer


def check_template(tokenizer) -> None:
    """Preparation's text, ids and labels equal transformers' ``apply_chat_template`` for this tokenizer."""
    from .tokenization import encode_documents

    system, pairs = "Be brief.", [("Name a river.", "The Nile, 清晨."), ("And one more?", " The Rhine\n")]
    for sys_ in (None, system):
        messages = conversation.to_chat_messages(sys_, pairs)
        doc = conversation.conversation_turns(sys_, pairs, tokenizer.bos_token, tokenizer.eos_token)
        ours = encode_documents(tokenizer, [doc], "turns", 1 << 30)
        theirs = tokenizer.apply_chat_template(messages, chat_template=conversation.CHAT_TEMPLATE, tokenize=True,
                                               return_dict=True, return_assistant_tokens_mask=True)
        if ours.ids.tolist() != list(theirs["input_ids"]) or ours.mask.tolist() != [
                bool(m) for m in theirs["assistant_masks"]]:
            raise UserInputError("preparation does not reproduce apply_chat_template's ids and assistant mask for "
                                 "this tokenizer; SFT labels would not match inference", where="--tokenizer_dir")


def _check_options(o: Options) -> None:
    if o.kind not in KINDS:
        raise ValueError(o.kind)
    if o.max_length < 2:
        raise UserInputError("must be at least 2", where="--max_length")
    if o.num_spliced_dataset_bins < 1:
        raise UserInputError("must be at least 1", where="--num_spliced_dataset_bins")
    if o.num_proc < 1:
        raise UserInputError("must be at least 1", where="--num_proc")
    check_output_dir(o.data_arrow_output_dir, o.overwrite, "--data_arrow_output_dir")
    if o.data_jsonl_output_dir:
        check_output_dir(o.data_jsonl_output_dir, o.overwrite, "--data_jsonl_output_dir")
        if Path(o.data_jsonl_output_dir).resolve() == Path(o.data_arrow_output_dir).resolve():
            raise UserInputError("must differ from --data_arrow_output_dir", where="--data_jsonl_output_dir")


def _progress_bar(total: int, desc: str, unit: str, **kw):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=None, dynamic_ncols=True, **kw)


def prepare(o: Options) -> dict:
    """Run the whole preparation; return the summary (also written to summary.json)."""
    # Millions of small records/tuples would trigger the cyclic garbage collector again and again (each
    # pass walking the whole heap); preparation makes no reference cycles worth collecting meanwhile.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _prepare(o)
    finally:
        if was_enabled:
            gc.enable()


def _prepare(o: Options) -> dict:
    """read -> select (category weights) -> tokenize -> pack -> bin and write -> summary."""
    t_start = time.perf_counter()
    _check_options(o)
    files = list_input_files(o.data_input_dirs)
    weights = parse_category_weights(o.category_weights)
    tokenizer = load_tokenizer(o.tokenizer_dir)
    parse, fit = _record_parser(o.kind, tokenizer)
    import datasets  # noqa: F401  (a one-time import of ~1 s, done with the tokenizer load, not mid-way)

    t_setup = time.perf_counter()
    corpus = _read(files, parse, o.skip_bad_lines, weights)
    t_read = time.perf_counter()
    copies, selected = _select(corpus, weights, o.seed)
    tokens = _tokenize(o, tokenizer, corpus.records, selected, fit)
    t_tok = time.perf_counter()
    sequences, stats = _pack(o, corpus, tokens, copies, selected, weights)
    t_pack = time.perf_counter()
    with ExitStack() as stack:  # everything goes to temporary dirs, renamed only when all is written
        arrow_tmp = stack.enter_context(atomic_directory(o.data_arrow_output_dir, overwrite=o.overwrite))
        jsonl_tmp = (stack.enter_context(atomic_directory(o.data_jsonl_output_dir, overwrite=o.overwrite))
                     if o.data_jsonl_output_dir else None)
        written = _bin_and_write(o, tokenizer, corpus.categories, sequences, stats, tokens, arrow_tmp, jsonl_tmp)
        summary = _summary(o, files, corpus.read, corpus.categories, stats, tokenized_tokens=int(tokens.doc_tokens.sum()),
                           times=(t_start, t_setup, t_read, t_tok, t_pack), **written)
        (arrow_tmp / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n",
                                              encoding="utf-8")
    if o.kind == "sft" and o.install_chat_template:
        path = conversation.install_chat_template(o.tokenizer_dir)
        logger.info("chat template installed in %s", path)
    return summary


def _record_parser(kind: str, tokenizer):
    """(line parser, fit policy): pretraining documents are chunked, SFT conversations cut between turns."""
    if kind == "sft":
        check_template(tokenizer)
        return conversation.sft_record_parser(tokenizer.bos_token, tokenizer.eos_token), "turns"
    return pretrain_record_parser(tokenizer.bos_token_id, tokenizer.eos_token_id), "chunk"


@dataclass
class _Corpus:
    read: object            # jsonl_reader's result: records and line statistics
    records: list[Record]
    categories: list[str]   # sorted
    record_cat: np.ndarray  # category index of each record


def _read(files, parse, skip_bad_lines: bool, weights: dict) -> _Corpus:
    """Read and validate every line before any heavy work."""
    with _progress_bar(sum(f.stat().st_size for f in files), "reading", "B", unit_scale=True) as bar:
        read = read_records(files, parse, skip_bad_lines, progress=bar.update)
    if not read.records:
        raise UserInputError("no valid record in the input", where="--data_input_dirs")
    categories = sorted({r.category for r in read.records})
    for name in sorted(set(weights) - set(categories)):
        logger.warning("%s names category %r, which no record has", WEIGHTS_FLAG, name)
    cat_index = {c: i for i, c in enumerate(categories)}
    record_cat = np.array([cat_index[r.category] for r in read.records], dtype=np.int64)
    return _Corpus(read=read, records=read.records, categories=categories, record_cat=record_cat)


def _select(corpus: _Corpus, weights: dict, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Category weights -> (copies per record, indices of records with at least one copy)."""
    copies = np.zeros(len(corpus.records), dtype=np.int64)
    for ci, name in enumerate(corpus.categories):
        members = np.flatnonzero(corpus.record_cat == ci)
        copies[members] = copies_for(len(members), weights.get(name, 1.0), category_rng(seed, name, _SALT_WEIGHTS))
    selected = np.flatnonzero(copies > 0)
    if len(selected) == 0:
        raise UserInputError("the weights leave no document", where=WEIGHTS_FLAG)
    return copies, selected


@dataclass
class _Tokens:
    ids: np.ndarray          # every chunk's tokens, concatenated
    mask: np.ndarray         # loss mask, aligned with ids
    chunk_rec: np.ndarray    # record index of each chunk
    chunk_start: np.ndarray  # offset of each chunk in ids
    chunk_len: np.ndarray
    doc_tokens: np.ndarray   # per selected record: tokens, supervised tokens, chunks it was cut into
    doc_sup: np.ndarray
    doc_split: np.ndarray
    drops: list              # (record index, reason, tokens, supervised tokens)


def _tokenize(o: Options, tokenizer, records: list[Record], selected: np.ndarray, fit: str) -> _Tokens:
    """Tokenize the selected records and fit them to max_length, in ``num_proc`` workers."""
    docs = [records[i].document for i in selected]
    columns = {k: [] for k in ("ids", "mask", "chunk_rec", "chunk_start", "chunk_len", "doc_tokens", "doc_sup",
                               "doc_split")}
    drops = []
    base_doc = base_tok = 0
    with _progress_bar(len(docs), "tokenizing", "doc") as bar:
        for batch in encode_all(tokenizer, docs, fit, o.max_length, o.num_proc,
                                tokenizer_loader=partial(load_tokenizer, o.tokenizer_dir)):
            for key, value in (("ids", batch.ids), ("mask", batch.mask),
                               ("chunk_rec", selected[base_doc + batch.chunk_doc]),
                               ("chunk_start", batch.chunk_start + base_tok), ("chunk_len", batch.chunk_len),
                               ("doc_tokens", batch.doc_tokens), ("doc_sup", batch.doc_supervised),
                               ("doc_split", batch.doc_split)):
                columns[key].append(value)
            drops += [(int(selected[base_doc + d.doc]), d.reason, d.tokens, d.supervised) for d in batch.drops]
            base_doc += len(batch.doc_tokens)
            base_tok += len(batch.ids)
            bar.update(len(batch.doc_tokens))
    del docs
    return _Tokens(**{k: np.concatenate(v) for k, v in columns.items()}, drops=drops)


def _pack(o: Options, corpus: _Corpus, tokens: _Tokens, copies: np.ndarray, selected: np.ndarray,
          weights: dict) -> tuple[dict[str, list[list[int]]], dict[str, dict]]:
    """Per category: expand copies, then pack chunks (pretraining) or keep one per sample (SFT).

    Returns (sequences: lists of chunk indices per category, per-category statistics)."""
    chunk_copies = copies[tokens.chunk_rec]
    chunk_cat = corpus.record_cat[tokens.chunk_rec]
    sequences: dict[str, list[list[int]]] = {}
    stats: dict[str, dict] = {}
    for ci, name in enumerate(corpus.categories):
        mine = np.flatnonzero(chunk_cat == ci)
        expanded = np.repeat(mine, chunk_copies[mine])
        if o.kind == "pretrain":
            packed = pack_best_fit_decreasing(tokens.chunk_len[expanded], o.max_length,
                                              category_rng(o.seed, name, _SALT_PACK))
            sequences[name] = [[int(expanded[i]) for i in seq] for seq in packed]
        else:
            sequences[name] = [[int(c)] for c in expanded]
        stats[name] = _category_stats(ci, corpus.record_cat, copies, selected, tokens, expanded,
                                      len(sequences[name]), weights.get(name, 1.0))
    for rec, reason, n_tokens, sup in tokens.drops:
        entry = stats[corpus.categories[corpus.record_cat[rec]]]["dropped"].setdefault(
            reason, {"count": 0, "tokens": 0, "supervised_tokens": 0})
        entry["count"] += int(copies[rec])
        entry["tokens"] += n_tokens * int(copies[rec])
        entry["supervised_tokens"] += sup * int(copies[rec])
    return sequences, stats


def _category_stats(ci: int, record_cat: np.ndarray, copies: np.ndarray, selected: np.ndarray, tokens: _Tokens,
                    expanded: np.ndarray, num_sequences: int, weight: float) -> dict:
    in_cat = record_cat[selected] == ci
    sel_copies = copies[selected]
    return {
        "records": int((record_cat == ci).sum()),
        "weight": weight,
        "documents": int(copies[record_cat == ci].sum()),
        "input_tokens": int((tokens.doc_tokens[in_cat] * sel_copies[in_cat]).sum()),
        "input_supervised_tokens": int((tokens.doc_sup[in_cat] * sel_copies[in_cat]).sum()),
        "documents_cut_into_chunks": int(sel_copies[in_cat & (tokens.doc_split > 1)].sum()),
        "chunks": int(len(expanded)),
        "sequences": num_sequences,
        "tokens": int(tokens.chunk_len[expanded].sum()),
        "supervised_tokens": 0,  # filled when the parts are written
        "dropped": {},
    }


def _bin_and_write(o: Options, tokenizer, categories: list[str], sequences: dict, stats: dict, tokens: _Tokens,
                   arrow_tmp: Path, jsonl_tmp: Path | None) -> dict:
    """Deal each category's sequences into bins, bin i of every category forming part i; write the parts.

    Returns what the summary needs of the output (parts, categories missing from parts, token counts)."""
    seq_counts = {name: len(seqs) for name, seqs in sequences.items()}
    num_parts, part_bins = assign_parts(seq_counts, o.num_spliced_dataset_bins,
                                        lambda name: category_rng(o.seed, name, _SALT_BINS))
    if num_parts < o.num_spliced_dataset_bins:
        logger.warning("only %d sequences in the largest category: writing %d parts instead of %d",
                       max(seq_counts.values()), num_parts, o.num_spliced_dataset_bins)
    missing = {name: [part_name(i) for i in range(num_parts) if len(part_bins[name][i]) == 0] for name in categories}
    missing = {k: v for k, v in missing.items() if v}
    for name, parts in missing.items():
        logger.warning("category %r has %d sequences, fewer than the %d parts: missing from %d part(s)",
                       name, seq_counts[name], num_parts, len(parts))
    jobs = _part_jobs(o, tokenizer, categories, sequences, part_bins, num_parts, arrow_tmp, jsonl_tmp)
    formatter = (IntListFormatter.for_range(min(IGNORE_INDEX, int(tokens.ids.min(initial=0))),
                                            max(int(tokens.ids.max(initial=0)), int(tokens.chunk_len.max(initial=0))))
                 if jsonl_tmp is not None else None)
    part_summaries, out_tokens, out_sup = [], 0, 0
    with _progress_bar(num_parts, "writing", "part") as bar:
        for job, (n_rows, n_tokens, n_sup, sup_by_cat) in zip(
                jobs, _write_parts(jobs, (tokens.ids, tokens.mask, tokens.chunk_start, tokens.chunk_len, formatter),
                                   o.num_proc)):
            for name, sup in sup_by_cat.items():
                stats[name]["supervised_tokens"] += sup
            part_summaries.append({"name": part_name(job.part), "samples": n_rows, "tokens": n_tokens,
                                   "categories": {name: job.row_cats.count(name) for name in categories}})
            out_tokens += n_tokens
            out_sup += n_sup
            bar.update(1)
    if o.kind == "sft":
        (arrow_tmp / conversation.CHAT_TEMPLATE_FILE).write_text(conversation.CHAT_TEMPLATE, encoding="utf-8")
    return {"num_parts": num_parts, "part_summaries": part_summaries, "missing": missing, "out_tokens": out_tokens,
            "out_sup": out_sup}


def _part_jobs(o: Options, tokenizer, categories: list[str], sequences: dict, part_bins: dict, num_parts: int,
               arrow_tmp: Path, jsonl_tmp: Path | None) -> list["_PartJob"]:
    """One job per part: its rows (every category's bin for the part) in a seeded shuffled order."""
    meta = {"format": FORMAT, "kind": o.kind, "max_length": o.max_length, "vocab_size": len(tokenizer),
            "tokenizer_dir": str(Path(o.tokenizer_dir).resolve()), "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id, "num_parts": num_parts}
    if o.kind == "sft":
        meta["chat_template"] = conversation.CHAT_TEMPLATE
    jobs = []
    for p in range(num_parts):
        rows, row_cats = [], []
        for name in categories:
            for s in part_bins[name][p]:
                rows.append(sequences[name][int(s)])
                row_cats.append(name)
        order = np.random.default_rng([o.seed, _SALT_ROWS, p]).permutation(len(rows))
        jobs.append(_PartJob(p, [rows[i] for i in order], [row_cats[i] for i in order], arrow_tmp / part_name(p),
                             jsonl_tmp / f"{part_name(p)}.jsonl" if jsonl_tmp is not None else None,
                             dict(meta, part=p)))
    return jobs


@dataclass
class _PartJob:
    part: int
    rows: list          # lists of chunk indices, in the part's (shuffled) order
    row_cats: list      # category of each row
    arrow_dir: Path
    jsonl_path: Path | None
    meta: dict


_TOKENS = None  # (ids, mask, chunk_start, chunk_len, jsonl formatter), set in the parent before forking


def _write_part(job: _PartJob) -> tuple[int, int, int, dict[str, int]]:
    """Gather and write one part; return (rows, tokens, supervised tokens, supervised tokens per category)."""
    ids, mask, chunk_start, chunk_len, formatter = _TOKENS
    part = gather_part(ids, mask, chunk_start, chunk_len, job.rows, job.row_cats)
    save_arrow_part(part, job.arrow_dir, job.meta)
    if job.jsonl_path is not None:
        write_jsonl_part(part, job.jsonl_path, formatter)
    sup_by_cat: dict[str, int] = {}
    if part.num_rows:
        sup_per_row = np.add.reduceat(part.labels != IGNORE_INDEX, part.row_offsets[:-1])
        for name, sup in zip(job.row_cats, sup_per_row.tolist()):
            sup_by_cat[name] = sup_by_cat.get(name, 0) + sup
    return part.num_rows, int(len(part.input_ids)), int((part.labels != IGNORE_INDEX).sum()), sup_by_cat


def _write_parts(jobs: list[_PartJob], tokens: tuple, num_proc: int):
    """Yield ``_write_part`` of each job in order; parts are independent files, so with fork they are
    written by ``num_proc`` processes at once (each inherits the token arrays instead of receiving them)."""
    global _TOKENS
    _TOKENS = tokens
    try:
        if num_proc <= 1 or len(jobs) <= 1 or "fork" not in mp.get_all_start_methods():
            yield from map(_write_part, jobs)
            return
        with mp.get_context("fork").Pool(min(num_proc, len(jobs))) as pool:
            yield from pool.imap(_write_part, jobs, chunksize=1)
    finally:
        _TOKENS = None


def _summary(o: Options, files, read, categories, stats, *, num_parts, part_summaries, missing, out_tokens, out_sup,
             tokenized_tokens, times) -> dict:
    t_start, t_setup, t_read, t_tok, t_pack = times
    elapsed = time.perf_counter() - t_start
    dropped: dict[str, dict] = {}
    for s in stats.values():
        for reason, d in s["dropped"].items():
            acc = dropped.setdefault(reason, {"count": 0, "tokens": 0, "supervised_tokens": 0})
            for k in acc:
                acc[k] += d[k]
    in_tokens = sum(s["input_tokens"] for s in stats.values())
    in_sup = sum(s["input_supervised_tokens"] for s in stats.values())
    lost = sum(d["tokens"] for d in dropped.values())
    lost_sup = sum(d["supervised_tokens"] for d in dropped.values())
    # The accounting must close: every token is either in the output or counted as dropped.
    if in_tokens - lost != out_tokens or in_sup - lost_sup != out_sup:
        raise RuntimeError(f"token accounting does not close: in {in_tokens}/{in_sup}, dropped {lost}/{lost_sup}, "
                           f"out {out_tokens}/{out_sup}")
    num_sequences = sum(s["sequences"] for s in stats.values())
    return {
        "format": FORMAT, "kind": o.kind, "max_length": o.max_length, "seed": o.seed, "num_proc": o.num_proc,
        "num_parts": num_parts, "input_files": [str(f) for f in files],
        "lines": {"read": read.lines_read, "blank": read.blank_lines, "bad": read.bad_lines,
                  "bad_by_reason": read.bad_reasons},
        "bad_lines": read.bad_line_list,
        "records": len(read.records),
        "category_weights": {name: stats[name]["weight"] for name in categories},
        "documents": sum(s["documents"] for s in stats.values()),
        "documents_cut_into_chunks": sum(s["documents_cut_into_chunks"] for s in stats.values()),
        "chunks": sum(s["chunks"] for s in stats.values()),
        "sequences": num_sequences,
        "tokens": {"input": in_tokens, "input_supervised": in_sup, "input_unsupervised": in_tokens - in_sup,
                   "output": out_tokens, "output_supervised": out_sup, "dropped": lost,
                   "dropped_supervised": lost_sup},
        "dropped": dropped,
        "fill_rate": round(fill_rate(out_tokens, num_sequences, o.max_length), 6),
        "categories": stats,
        "categories_missing_from_parts": missing,
        "parts": part_summaries,
        "time_s": {"load_tokenizer": round(t_setup - t_start, 3), "read_validate": round(t_read - t_setup, 3), "tokenize": round(t_tok - t_read, 3),
                   "pack": round(t_pack - t_tok, 3), "bin_write": round(time.perf_counter() - t_pack, 3),
                   "total": round(elapsed, 3)},
        "tokens_tokenized": tokenized_tokens,
        "tokens_per_s": round(tokenized_tokens / elapsed, 1) if elapsed > 0 else math.inf,
        "tokenize_tokens_per_s": round(tokenized_tokens / (t_tok - t_read), 1) if t_tok > t_read else math.inf,
    }


def print_summary(summary: dict) -> None:
    shown = {k: v for k, v in summary.items() if k not in ("bad_lines", "parts", "input_files")}
    print(json.dumps(shown, indent=2, ensure_ascii=False))
    t = summary["tokens"]
    print(f"{summary['documents']} documents, {t['output']} tokens ({t['output_supervised']} supervised) in "
          f"{summary['sequences']} samples over {summary['num_parts']} parts; fill rate {summary['fill_rate']:.3f}; "
          f"dropped {t['dropped']} tokens; {summary['lines']['bad']} bad lines; "
          f"{summary['tokens_per_s']:.0f} tokens/s; {summary['time_s']['total']:.1f} s")


def main(kind: str, argv: Sequence[str] | None = None) -> int:
    args = build_arg_parser(kind).parse_args(argv)
    summary = prepare(Options.from_args(kind, args))
    print_summary(summary)
    print(f"dataset written to {args.data_arrow_output_dir} (summary: {Path(args.data_arrow_output_dir) / SUMMARY_FILE})")
    return 0
