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
import hashlib
import json
import math
import os
import shutil
import time
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Sequence

from ..tokenizer.identity import tokenizer_digest
from ..utils.cli import add_config_flag, parse_with_config
from ..utils.errors import UserInputError
from ..utils.fs import atomic_directory, atomic_write_text, check_output_dir
from ..utils.logging import get_logger
from ..utils.remote_code import refuse_remote_code
from . import chat_templates, conversation
from .assemble import PartJob, plan_parts, write_parts
from .boundaries import document_boundaries
from .documents import pretrain_record_parser
from .jsonl_reader import MAX_LISTED_BAD_LINES, list_input_files
from .mixing import FLAG as WEIGHTS_FLAG, parse_category_weights
from .schema import FORMAT, IGNORE_INDEX, SUMMARY_FILE, part_name
from .sources import as_jsonl
from .splice import fill_rate
from .unit_work import UnitJob, UnitResult, process_unit, unit_dir, validate_unit
from .units import plan_units
from .workers import can_fork, fork_pool

logger = get_logger(__name__)

KINDS = ("pretrain", "sft")


def default_num_proc() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def build_arg_parser(kind: str) -> argparse.ArgumentParser:
    what = "pretraining records {source, target, category}" if kind == "pretrain" else \
        "SFT conversations ({messages: [{role, content}, ...]}, ShareGPT or Alpaca records; category?)"
    p = argparse.ArgumentParser(description=f"Tokenize jsonl {what} into a category-binned Arrow dataset "
                                            "for train.py. See docs/data_preparation.md.")
    p.add_argument("--data_input_dirs", required=True,
                   help="comma-separated directories; every *.jsonl file in each is read")
    p.add_argument("--tokenizer_dir", required=True, help="Hugging Face tokenizer directory (a fast tokenizer is used)")
    p.add_argument("--data_cache_dir", default=None,
                   help="where finished units of work and parts are kept until the output is complete, so a "
                        "killed run resumes where it stopped (default: .NAME.cache beside "
                        "--data_arrow_output_dir; removed after success)")
    p.add_argument("--data_jsonl_output_dir", default=None,
                   help="also write the samples as jsonl here (part-00000.jsonl ...); omitted: no jsonl copy")
    p.add_argument("--data_arrow_output_dir", required=True,
                   help="output: part-00000 ... (datasets.save_to_disk) and summary.json")
    p.add_argument("--max_length", type=int, default=4096, help="maximum tokens per sample (default 4096)")
    p.add_argument("--num_spliced_dataset_bins", type=int, default=10,
                   help="bins per category = output parts; part i holds bin i of every category (default 10)")
    p.add_argument("--num_proc", type=int, default=default_num_proc(),
                   help="tokenizer worker processes (default: the available cores)")
    p.add_argument("--unit_size_mb", type=float, default=16,
                   help="input is prepared in units of about this many MB (at line ends), one per worker at a "
                        "time: peak memory grows with this times --num_proc, not with the corpus")
    p.add_argument("--num_shards", type=int, default=1,
                   help="split the work over N independent runs (machines): each prepares every N-th unit")
    p.add_argument("--shard_index", type=int, default=0,
                   help="which of the --num_shards runs this is (0-based); train on all shards' output dirs")
    p.add_argument("--seed", type=int, default=42, help="seed of every random choice (packing ties, bins, weights)")
    p.add_argument("--skip_bad_lines", action="store_true",
                   help="skip invalid lines (counted and listed in the summary) instead of stopping at the first")
    p.add_argument("--overwrite", action="store_true", help="replace existing non-empty output directories")
    p.add_argument(WEIGHTS_FLAG, default=None,
                   help='JSON object or JSON file {category: weight}: 2.0 repeats each document twice, 0.5 keeps '
                        'a deterministic half, 1.5 all plus half; unnamed categories keep 1')
    if kind == "sft":
        p.add_argument("--chat_template", default="auto", help="the chat template conversations are rendered with: "
                       + chat_templates.CHOICES_HELP)
        p.add_argument("--install_chat_template", action="store_true",
                       help="also store the template used in --tokenizer_dir/tokenizer_config.json (refused if it "
                            "already has a different one, unless --replace_chat_template)")
        p.add_argument("--replace_chat_template", action="store_true",
                       help="with --install_chat_template: replace the tokenizer's own, different chat template")
    add_config_flag(p)
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
    unit_size_mb: float = 16
    num_shards: int = 1
    shard_index: int = 0
    seed: int = 42
    skip_bad_lines: bool = False
    overwrite: bool = False
    category_weights: str | None = None
    install_chat_template: bool = False
    chat_template: str = "auto"
    replace_chat_template: bool = False

    @classmethod
    def from_args(cls, kind: str, args: argparse.Namespace) -> "Options":
        fields = {k: v for k, v in vars(args).items() if k in cls.__dataclass_fields__}
        return cls(kind=kind, **fields)


def load_tokenizer(tokenizer_dir: str):
    from transformers import AutoTokenizer

    if not Path(tokenizer_dir).is_dir():
        raise UserInputError(f"{tokenizer_dir} is not a directory", where="--tokenizer_dir")
    refuse_remote_code(tokenizer_dir, "--tokenizer_dir", model=False)
    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, use_fast=True, trust_remote_code=False)
    except Exception as err:  # transformers raises many kinds; all mean "not a usable tokenizer dir"
        raise UserInputError(f"cannot load a tokenizer from {tokenizer_dir}: {err}", where="--tokenizer_dir") from None
    if not tokenizer.is_fast:
        raise UserInputError("a fast tokenizer is needed (tokenizers library)", where="--tokenizer_dir")
    document_boundaries(tokenizer)  # refuses a tokenizer with neither bos nor eos
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
    if not o.unit_size_mb > 0:
        raise UserInputError("must be positive", where="--unit_size_mb")
    if o.num_shards < 1:
        raise UserInputError("must be at least 1", where="--num_shards")
    if not 0 <= o.shard_index < o.num_shards:
        raise UserInputError(f"must be in 0..{o.num_shards - 1} (--num_shards {o.num_shards})", where="--shard_index")
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
    """plan units -> validate -> prepare each unit into the cache -> plan and write parts -> move -> summary."""
    t_start = time.perf_counter()
    _check_options(o)
    files = list_input_files(o.data_input_dirs)
    weights = parse_category_weights(o.category_weights)
    tokenizer = load_tokenizer(o.tokenizer_dir)
    parse, fit, template = _record_parser(o, tokenizer)
    import datasets  # noqa: F401  (a one-time import of ~1 s, done with the tokenizer load, not mid-way)

    cache = _open_cache(o, files, weights)
    jsonl = [as_jsonl(path, cache, i) for i, path in enumerate(files)]  # compressed, parquet, datasets: converted
    all_units = plan_units(jsonl, max(1, int(o.unit_size_mb * (1 << 20))), sources=files)
    units = [u for u in all_units if u.index % o.num_shards == o.shard_index]
    job = UnitJob(o.kind, parse, fit, o.max_length, o.seed, weights, o.skip_bad_lines, cache)
    t_setup = time.perf_counter()
    pending = [u for u in units if not unit_dir(cache, u).is_dir()]
    if len(pending) < len(units):
        logger.info("resuming: %d of %d units already prepared in %s", len(units) - len(pending), len(units), cache)
    try:
        if not o.skip_bad_lines:
            _run_units(partial(validate_unit, job), pending, o.num_proc, "validating")
        t_read = time.perf_counter()
        _run_units(partial(process_unit, job, tokenizer), pending, o.num_proc, "preparing")
    except BaseException:
        if not any((cache / "units").iterdir()):  # nothing worth keeping for a resume
            shutil.rmtree(cache, ignore_errors=True)
        raise
    t_tok = time.perf_counter()
    results = [UnitResult.open(unit_dir(cache, u)) for u in units]
    records = sum(r.meta["records"] for r in results)
    if not records:
        raise UserInputError("no valid record in the input", where="--data_input_dirs")
    stats = _merge_category_stats(results)
    for name in sorted(set(weights) - set(stats)):
        logger.warning("%s names category %r, which no record has", WEIGHTS_FLAG, name)
    if not any(s["documents"] for s in stats.values()):
        raise UserInputError("the weights leave no document", where=WEIGHTS_FLAG)
    num_parts, plans, missing, counts = plan_parts(results, o.num_spliced_dataset_bins, o.seed)
    _warn_about_parts(o, num_parts, missing, counts)
    t_pack = time.perf_counter()
    written = _write_parts(o, tokenizer, cache, units, results, plans, num_parts, template)
    written["missing"] = missing
    summary = _summary(o, files, units, all_units, results, stats, tokenized_tokens=sum(
        r.meta["tokenized_tokens"] for r in results), times=(t_start, t_setup, t_read, t_tok, t_pack), **written)
    _publish(o, cache, num_parts, summary)
    if o.kind == "sft" and o.install_chat_template:
        if tokenizer.chat_template == template:
            logger.info("--install_chat_template: %s already holds this chat template", o.tokenizer_dir)
        else:
            path = conversation.install_chat_template(o.tokenizer_dir, template)
            logger.warning("chat template %s in %s", "REPLACED" if tokenizer.chat_template else "installed", path)
    return summary


def _record_parser(o: Options, tokenizer):
    """(line parser, fit policy, chat template or None): pretraining documents are chunked, SFT conversations
    cut between turns."""
    if o.kind != "sft":
        boundaries = document_boundaries(tokenizer)
        logger.info(boundaries.describe())
        return pretrain_record_parser(boundaries.bos_id, boundaries.eos_id), "chunk", None
    template, what = chat_templates.choose_template(tokenizer, o.chat_template)
    own = tokenizer.chat_template
    if o.install_chat_template and own and own != template and not o.replace_chat_template:
        raise UserInputError(f"{o.tokenizer_dir} already has a different chat template; add --replace_chat_template "
                             f"to replace it", where="--install_chat_template")
    if what == "project":
        check_template(tokenizer)
        parse = conversation.sft_record_parser(tokenizer.bos_token, tokenizer.eos_token)
    else:
        from .tokenization import encode_documents

        def encode(doc):
            encoded = encode_documents(tokenizer, [doc], "turns", 1 << 30)
            return encoded.ids.tolist(), encoded.mask.tolist()

        chat_templates.check_rendering(tokenizer, template, encode)
        parse = chat_templates.template_record_parser(tokenizer, template)
    logger.info("SFT conversations rendered with %s chat template%s", {"model": "the model's own",
                "project": "the project's"}.get(what, f"the file {what}'s"),
                " (the tokenizer's own is kept in it; the trained model gets the one used)" if own and
                template != own else "")
    return parse, "turns", template


def _fingerprint(o: Options, files: list[Path], weights: dict) -> dict:
    """What the cached units depend on: a cache with another fingerprint is not reused."""
    tok_dir = Path(o.tokenizer_dir)
    digest = hashlib.sha256()
    for name in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"):
        if (tok_dir / name).is_file():
            digest.update(name.encode() + (tok_dir / name).read_bytes())
    return {"format": FORMAT, "cache_version": 1, "kind": o.kind, "chat_template": o.chat_template, "max_length": o.max_length, "seed": o.seed,
            "skip_bad_lines": o.skip_bad_lines, "category_weights": weights, "unit_size_mb": o.unit_size_mb,
            "num_shards": o.num_shards, "shard_index": o.shard_index, "bins": o.num_spliced_dataset_bins,
            "jsonl": bool(o.data_jsonl_output_dir), "tokenizer_sha256": digest.hexdigest(),
            "files": [[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in files]}


def cache_dir_for(o: Options) -> Path:
    if o.data_cache_dir:
        return Path(o.data_cache_dir)
    out = Path(o.data_arrow_output_dir)
    return out.parent / f".{out.name}.cache"


def _open_cache(o: Options, files: list[Path], weights: dict) -> Path:
    """The cache dir, kept from an interrupted run with the same fingerprint, else emptied."""
    cache = cache_dir_for(o)
    manifest = cache / "manifest.json"
    fingerprint = _fingerprint(o, files, weights)
    if cache.is_dir():
        try:
            same = json.loads(manifest.read_text(encoding="utf-8")) == fingerprint
        except (OSError, ValueError):
            same = False
        if not same:
            if any(cache.iterdir()) and not manifest.is_file():
                raise UserInputError(f"{cache} is not empty and is no preparation cache; give another directory",
                                     where="--data_cache_dir")
            logger.info("cache %s is from another input or settings: starting afresh", cache)
            shutil.rmtree(cache)
    if not cache.is_dir():
        for sub in ("units", "parts", "jsonl"):
            (cache / sub).mkdir(parents=True, exist_ok=True)
        atomic_write_text(manifest, json.dumps(fingerprint, indent=2, ensure_ascii=False) + "\n")
    return cache


_TASK = None  # the function run on each unit, set in the parent before forking (workers inherit it)


def _unit_task(unit):
    return _TASK(unit)


def _run_units(task, units: list, num_proc: int, desc: str) -> None:
    """Run ``task(unit)`` over ``units`` in ``num_proc`` forked workers (one unit each at a time), in order."""
    global _TASK
    if not units:
        return
    _TASK = task
    try:
        with _progress_bar(sum(u.size for u in units), desc, "B", unit_scale=True) as bar:
            if num_proc <= 1 or len(units) == 1 or not can_fork():
                for unit in units:
                    bar.update(task(unit))
            else:
                with fork_pool(min(num_proc, len(units))) as pool:
                    for size in pool.imap(_unit_task, units, chunksize=1):
                        bar.update(size)
    finally:
        _TASK = None


def _merge_category_stats(results: list) -> dict:
    """Per-category statistics summed over the units (the weight is the category's, not summed)."""
    merged: dict[str, dict] = {}
    for r in results:
        for name, st in r.meta["stats"].items():
            into = merged.setdefault(name, {k: st[k] if k == "weight" else {} if k == "dropped" else 0 for k in st})
            for key, value in st.items():
                if key == "dropped":
                    _add_drops(into["dropped"], value)
                elif key != "weight":
                    into[key] += value
    return dict(sorted(merged.items()))


def _add_drops(into: dict, drops: dict) -> None:
    """Add ``{reason: {count, tokens, supervised_tokens}}`` into ``into``."""
    for reason, d in drops.items():
        acc = into.setdefault(reason, {"count": 0, "tokens": 0, "supervised_tokens": 0})
        for k in acc:
            acc[k] += d[k]


def _warn_about_parts(o: Options, num_parts: int, missing: dict, counts: dict) -> None:
    if num_parts < o.num_spliced_dataset_bins:
        logger.warning("only %d sequences in the largest category: writing %d parts instead of %d",
                       max(counts.values()), num_parts, o.num_spliced_dataset_bins)
    for name, parts in missing.items():
        logger.warning("category %r has %d sequences, fewer than the %d parts: missing from %d part(s)",
                       name, counts[name], num_parts, len(parts))


def _write_parts(o: Options, tokenizer, cache: Path, units: list, results: list, plans: list,
                 num_parts: int, template: str | None) -> dict:
    meta = {"format": FORMAT, "kind": o.kind, "max_length": o.max_length, "vocab_size": len(tokenizer),
            "tokenizer_dir": str(Path(o.tokenizer_dir).resolve()), "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id, "num_parts": num_parts,
            "tokenizer_digest": tokenizer_digest(tokenizer)}
    if o.kind == "pretrain":  # what each document really starts and ends with
        boundaries = document_boundaries(tokenizer)
        meta.update(boundaries.meta(), document_boundaries=boundaries.describe())
    if o.num_shards > 1:
        meta["shard"] = {"index": o.shard_index, "of": o.num_shards}
    if o.kind == "sft":
        meta["chat_template"] = template
        meta["end_of_turn_tokens"] = chat_templates.end_of_turn_tokens(tokenizer, template)
    lo = min([IGNORE_INDEX] + [r.meta["id_range"][0] for r in results])
    hi = max([0] + [max(r.meta["id_range"][1], r.meta["max_seq_length"]) for r in results])
    jsonl_dir = cache / "jsonl" if o.data_jsonl_output_dir else None
    jobs = [PartJob(plan, [unit_dir(cache, u) for u in units], cache / "parts", jsonl_dir, meta, (lo, hi))
            for plan in plans]
    part_summaries, out_tokens, out_sup = [], 0, 0
    with _progress_bar(num_parts, "writing", "part") as bar:
        for result in write_parts(jobs, o.num_proc):
            part_summaries.append({"name": result["name"], "samples": result["samples"], "tokens": result["tokens"],
                                   "categories": result["categories"]})
            out_tokens += result["tokens"]
            out_sup += result["supervised_tokens"]
            bar.update(1)
    return {"num_parts": num_parts, "part_summaries": part_summaries, "out_tokens": out_tokens, "out_sup": out_sup}


def _publish(o: Options, cache: Path, num_parts: int, summary: dict) -> None:
    """Move the finished parts from the cache into the output dirs (each atomically), then drop the cache."""
    with ExitStack() as stack:  # everything goes to temporary dirs, renamed only when all is there
        arrow_tmp = stack.enter_context(atomic_directory(o.data_arrow_output_dir, overwrite=o.overwrite))
        jsonl_tmp = (stack.enter_context(atomic_directory(o.data_jsonl_output_dir, overwrite=o.overwrite))
                     if o.data_jsonl_output_dir else None)
        for p in range(num_parts):
            shutil.move(str(cache / "parts" / part_name(p)), str(arrow_tmp / part_name(p)))
            if jsonl_tmp is not None:
                shutil.move(str(cache / "jsonl" / f"{part_name(p)}.jsonl"), str(jsonl_tmp / f"{part_name(p)}.jsonl"))
        if o.kind == "sft":
            (arrow_tmp / conversation.CHAT_TEMPLATE_FILE).write_text(conversation.CHAT_TEMPLATE, encoding="utf-8")
        (arrow_tmp / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n",
                                              encoding="utf-8")
    shutil.rmtree(cache, ignore_errors=True)


def _summary(o: Options, files, units, all_units, results, stats, *, num_parts, part_summaries, missing, out_tokens,
             out_sup, tokenized_tokens, times) -> dict:
    t_start, t_setup, t_read, t_tok, t_pack = times
    lines = {k: sum(r.meta["lines"][k] for r in results) for k in ("read", "blank", "bad")}
    bad_reasons: dict[str, int] = {}
    for r in results:
        for reason, n in r.meta["bad_reasons"].items():
            bad_reasons[reason] = bad_reasons.get(reason, 0) + n
    bad_list = [b for r in results for b in r.meta["bad_line_list"]][:MAX_LISTED_BAD_LINES]
    elapsed = time.perf_counter() - t_start
    dropped: dict[str, dict] = {}
    for s in stats.values():
        _add_drops(dropped, s["dropped"])
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
        "units": {"total": len(all_units), "prepared_here": len(units), "unit_size_mb": o.unit_size_mb},
        "shard": {"index": o.shard_index, "of": o.num_shards},
        "lines": dict(lines, bad_by_reason=bad_reasons),
        "bad_lines": bad_list,
        "records": sum(r.meta["records"] for r in results),
        "category_weights": {name: stats[name]["weight"] for name in stats},
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
        "time_s": {"setup": round(t_setup - t_start, 3), "validate": round(t_read - t_setup, 3),
                   "tokenize_pack": round(t_tok - t_read, 3), "plan_parts": round(t_pack - t_tok, 3),
                   "write": round(time.perf_counter() - t_pack, 3), "total": round(elapsed, 3)},
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
    args = parse_with_config(build_arg_parser(kind), argv)
    summary = prepare(Options.from_args(kind, args))
    print_summary(summary)
    print(f"dataset written to {args.data_arrow_output_dir} (summary: {Path(args.data_arrow_output_dir) / SUMMARY_FILE})")
    return 0
