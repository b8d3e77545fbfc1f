"""Stage 2: grow a model's embedding and lm_head to an extended tokenizer and initialise the new rows.

Works for sentencepiece tokenizers (LLaMA-2, Mistral-7B) and byte-level BPE ones (LLaMA-3, Qwen2, Mistral-Nemo),
for any causal LM transformers knows (GQA, qkv bias, rope scaling untouched); a tied model stays tied.

    python colossal_llama2/model/init_model.py --source_model_and_tokenizer_path llama2 \
        --target_tokenizer_path llama2-zh --target_model_path llama2-zh-init

Old rows stay bit-identical; new rows are the mean of the old rows (``--init_method mean``, upstream's)
or the mean of the rows of the piece's tokenization under the source tokenizer (``subword_mean``).
Writes a complete Hugging Face checkpoint (safetensors, source dtype, tokenizer files included).
See docs/tokenizer_and_model.md.
"""
from __future__ import annotations

import argparse
import resource
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from colossal_llama2.model.model_card import base_model_of, write_card
from colossal_llama2.tokenizer import hf_files, sp_surgery
from colossal_llama2.tokenizer.bpe_surgery import BPETable
from colossal_llama2.utils.errors import UserInputError, run_cli
from colossal_llama2.utils.fs import atomic_directory, check_output_dir
from colossal_llama2.utils.remote_code import refuse_remote_code
from colossal_llama2.utils.logging import get_logger

logger = get_logger(__name__)

INIT_METHODS = ("mean", "subword_mean")


@dataclass
class GrowthReport:
    source_tokenizer_size: int
    source_config_vocab: int
    target_tokenizer_size: int
    new_vocab_size: int  # config.vocab_size written (>= target tokenizer size when padded)
    tied: bool
    init_method: str
    peak_rss_gib: float

    def lines(self) -> list[str]:
        pad = self.new_vocab_size - self.target_tokenizer_size
        return [f"source: tokenizer {self.source_tokenizer_size} pieces, config.vocab_size {self.source_config_vocab}",
                f"target: tokenizer {self.target_tokenizer_size} pieces, config.vocab_size {self.new_vocab_size} "
                f"({self.target_tokenizer_size - self.source_tokenizer_size} new rows by {self.init_method}, "
                f"{pad} padding rows)",
                f"embeddings {'tied' if self.tied else 'untied'}; peak memory (RSS) {self.peak_rss_gib:.2f} GiB"]


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 ** 2)  # Linux: KiB


def check_extends(source: sp_surgery.sp_pb2.ModelProto, target: sp_surgery.sp_pb2.ModelProto) -> None:
    """The target tokenizer must hold the source's pieces first, same ids and types."""
    if len(target.pieces) < len(source.pieces):
        raise UserInputError(f"has {len(target.pieces)} pieces, fewer than the source's {len(source.pieces)}: it "
                             f"does not extend the source tokenizer", where="--target_tokenizer_path")
    for i, (a, b) in enumerate(zip(source.pieces, target.pieces)):
        if a.piece != b.piece or a.type != b.type:
            raise UserInputError(f"does not extend the source tokenizer: id {i} is {b.piece!r} there but {a.piece!r} "
                                 f"in the source", where="--target_tokenizer_path")


def round_up(n: int, multiple: int | None) -> int:
    return n if not multiple else -(-n // multiple) * multiple


def piece_tokenizations(source: sp_surgery.sp_pb2.ModelProto, new_pieces: list[str]) -> list[list[int]]:
    """Each new piece's ids under the source tokenizer, encoded as it appears (no dummy '▁' prepended)."""
    sp = sp_surgery.processor_without_dummy_prefix(source)
    out = []
    for piece in new_pieces:
        ids = sp.encode(piece.replace(sp_surgery.WHITESPACE_SYMBOL, " "))
        out.append(ids or [sp.unk_id()])
    return out


def _load_model(path: Path):
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), torch_dtype="auto", low_cpu_mem_usage=True,
                                                     trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise UserInputError(f"cannot load a causal LM from {path}: {err}", where="--source_model_and_tokenizer_path") from None
    model.requires_grad_(False)
    return model


def _check_dirs(source_path: str | Path, target_tokenizer_path: str | Path, target_model_path: str | Path,
                overwrite: bool) -> tuple[Path, Path, Path, bool, str]:
    """(source dir, target tokenizer dir, target model dir, may the target be replaced, tokenizer kind)."""
    kind = hf_files.tokenizer_kind(source_path, "--source_model_and_tokenizer_path")
    source_path = Path(source_path)
    if not (source_path / "config.json").is_file():
        raise UserInputError(f"{source_path} has no config.json (not a Hugging Face model dir)",
                             where="--source_model_and_tokenizer_path")
    refuse_remote_code(source_path, "--source_model_and_tokenizer_path", tokenizer=False)  # tokenizer: tokenizer_kind
    target_kind = hf_files.tokenizer_kind(target_tokenizer_path, "--target_tokenizer_path")
    if target_kind != kind:
        raise UserInputError(f"is a {target_kind} tokenizer but the source's is {kind}: it does not extend the "
                             f"source tokenizer", where="--target_tokenizer_path")
    target_tok, target = Path(target_tokenizer_path), Path(target_model_path)
    # Upstream allows writing the model into the tokenizer dir: fine while that dir holds only tokenizer files.
    same_dir = target.exists() and target.resolve() == target_tok.resolve()
    tokenizer_files = (hf_files.REQUIRED_FILES + hf_files.OPTIONAL_FILES + (hf_files.FAST_FILE,)
                       + hf_files.BYTE_LEVEL_OPTIONAL + hf_files.SLOW_BPE_FILES)
    only_tokenizer = same_dir and all(p.name in tokenizer_files for p in target.iterdir())
    check_output_dir(target, overwrite or only_tokenizer, "--target_model_path")
    if target.exists() and target.resolve() == source_path.resolve():
        raise UserInputError("must differ from --source_model_and_tokenizer_path", where="--target_model_path")
    return source_path, target_tok, target, overwrite or only_tokenizer, kind


@dataclass
class _Vocabularies:
    """What growing the model needs from the two tokenizers, whatever their kind."""

    source_size: int
    target_size: int
    new_pieces: list[str]  # the target's tokens from source_size on, in id order
    source_ids_of: Callable[[list[str]], list[list[int]]]  # new pieces -> their ids under the source tokenizer


def _read_sentencepiece(source_path: Path, target_tok: Path) -> _Vocabularies:
    source_sp, target_sp = _read_sp_models(source_path, target_tok)
    n_src = len(source_sp.pieces)
    return _Vocabularies(n_src, len(target_sp.pieces), [p.piece for p in target_sp.pieces[n_src:]],
                         lambda pieces: piece_tokenizations(source_sp, pieces))


def _read_byte_level(source_path: Path, target_tok: Path) -> _Vocabularies:
    """Every source token (model vocabulary and added tokens) at the same id in the target; new ids contiguous."""
    source = BPETable.load(source_path / hf_files.FAST_FILE, "--source_model_and_tokenizer_path")
    target = BPETable.load(target_tok / hf_files.FAST_FILE, "--target_tokenizer_path")
    target_ids = {**target.vocab, **target.added_tokens}
    for token, token_id in {**source.vocab, **source.added_tokens}.items():
        if target_ids.get(token) != token_id:
            raise UserInputError(f"does not extend the source tokenizer: {token!r} is id {token_id} in the source but "
                                 f"{target_ids.get(token)} here", where="--target_tokenizer_path")
    by_id = {i: t for t, i in target_ids.items() if i >= source.base_size}
    if sorted(by_id) != list(range(source.base_size, target.base_size)):
        raise UserInputError(f"its new token ids are not contiguous from {source.base_size}",
                             where="--target_tokenizer_path")
    source_model = source.bpe_model()
    return _Vocabularies(source.base_size, target.base_size, [by_id[i] for i in sorted(by_id)],
                         lambda pieces: [[t.id for t in source_model.tokenize(p)] for p in pieces])


def _read_sp_models(source_path: Path, target_tok: Path):
    """(source sentencepiece model, target one) after checking that the target extends the source."""
    source_sp = sp_surgery.parse_model((source_path / hf_files.SP_MODEL_FILE).read_bytes(),
                                       where=str(source_path / hf_files.SP_MODEL_FILE))
    target_sp = sp_surgery.parse_model((target_tok / hf_files.SP_MODEL_FILE).read_bytes(),
                                       where=str(target_tok / hf_files.SP_MODEL_FILE))
    check_extends(source_sp, target_sp)
    hf_files.check_no_added_tokens_beyond(target_tok, len(target_sp.pieces), "--target_tokenizer_path")
    hf_files.check_fast_file_matches(target_tok, len(target_sp.pieces), "--target_tokenizer_path")
    return source_sp, target_sp


def _is_tied(model) -> bool:
    return bool(getattr(model.config, "tie_word_embeddings", False)) or (
        model.get_output_embeddings() is not None
        and model.get_output_embeddings().weight is model.get_input_embeddings().weight)


def _grow_embeddings(model, n_src: int, new_size: int, tied: bool, init_method: str,
                     vocabularies: _Vocabularies) -> None:
    """Resize embedding (and untied lm_head) to ``new_size`` rows; rows from ``n_src`` on get their init."""
    from colossal_llama2.model.embedding_init import fill_new_rows, mean_row, subword_mean_rows  # torch: only now

    # Grows (or trims source padding) keeping rows [0, min(old, new)); everything from n_src is rewritten below.
    model.resize_token_embeddings(new_size, mean_resizing=False)
    matrices = [model.get_input_embeddings().weight]
    if not tied and model.get_output_embeddings() is not None:
        matrices.append(model.get_output_embeddings().weight)
    tokenizations = vocabularies.source_ids_of(vocabularies.new_pieces) if init_method == "subword_mean" else None
    for weight in matrices:
        mean = mean_row(weight, n_src)
        rows = subword_mean_rows(weight, tokenizations) if tokenizations is not None else None
        fill_new_rows(weight, n_src, rows, pad_value=mean)
    model.config.vocab_size = new_size


def init_model(source_path: str | Path, target_tokenizer_path: str | Path, target_model_path: str | Path, *,
               init_method: str = "mean", pad_to_multiple_of: int | None = None, max_shard_size: str = "5GB",
               overwrite: bool = False, language: list[str] | None = None) -> GrowthReport:
    if init_method not in INIT_METHODS:
        raise UserInputError(f"must be one of {', '.join(INIT_METHODS)}", where="--init_method")
    if pad_to_multiple_of is not None and pad_to_multiple_of <= 0:
        raise UserInputError("must be a positive integer", where="--pad_to_multiple_of")
    source_path, target_tok, target, replace, kind = _check_dirs(source_path, target_tokenizer_path,
                                                                 target_model_path, overwrite)
    if kind == hf_files.SENTENCEPIECE:
        vocabularies = _read_sentencepiece(source_path, target_tok)
        # In memory: the target may replace that dir.
        tokenizer_files = hf_files.read_tokenizer_files(target_tok, include_fast=True)
    else:
        vocabularies = _read_byte_level(source_path, target_tok)
        tokenizer_files = hf_files.read_byte_level_files(target_tok)
    n_src, n_tgt = vocabularies.source_size, vocabularies.target_size

    model = _load_model(source_path)
    config_vocab = model.get_input_embeddings().weight.shape[0]
    if config_vocab < n_src:
        raise UserInputError(f"the model has {config_vocab} embedding rows but its tokenizer {n_src} pieces",
                             where="--source_model_and_tokenizer_path")
    new_size = round_up(n_tgt, pad_to_multiple_of)
    if new_size < config_vocab:
        logger.warning("source rows %d..%d were padding beyond its tokenizer (%d pieces); they are not kept "
                       "(use --pad_to_multiple_of to pad the new matrix)", n_src, config_vocab - 1, n_src)
    tied = _is_tied(model)
    _grow_embeddings(model, n_src, new_size, tied, init_method, vocabularies)

    report = GrowthReport(source_tokenizer_size=n_src, source_config_vocab=config_vocab, target_tokenizer_size=n_tgt,
                          new_vocab_size=new_size, tied=tied, init_method=init_method, peak_rss_gib=0.0)
    base = base_model_of(source_path)
    with atomic_directory(target, overwrite=replace) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True, max_shard_size=max_shard_size)
        hf_files.write_files(tmp, tokenizer_files)
        write_card(tmp, base_model=base, title=f"{Path(target).name}: {base} with a grown vocabulary",
                   language=language, sections={"Vocabulary": report.lines()[:2] + [
                       f"every source token keeps its id and its embedding row; tokenizer from {target_tok}"]})
    report.peak_rss_gib = peak_rss_gib()
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--source_model_and_tokenizer_path", required=True,
                        help="Hugging Face model dir with its tokenizer (tokenizer.model, or tokenizer.json for "
                             "byte-level BPE models)")
    parser.add_argument("--target_tokenizer_path", required=True, help="the extended tokenizer (from init_tokenizer.py)")
    parser.add_argument("--target_model_path", required=True,
                        help="where to write the grown model (may be the target tokenizer dir itself)")
    parser.add_argument("--init_method", choices=INIT_METHODS, default="mean",
                        help="new rows: mean of all old rows, or mean of the rows of the piece's old tokenization")
    parser.add_argument("--pad_to_multiple_of", type=int, default=None,
                        help="pad the vocab dimension to a multiple of N (e.g. 64); padding rows hold the mean row")
    parser.add_argument("--max_shard_size", default="5GB", help="safetensors shard size (bounds extra memory while saving)")
    parser.add_argument("--language", default=None,
                        help="comma-separated ISO 639-1 codes of the languages the model is for (e.g. zh,en), "
                             "written into the model card (README.md)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty target directory")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    report = init_model(args.source_model_and_tokenizer_path, args.target_tokenizer_path, args.target_model_path,
                        init_method=args.init_method, pad_to_multiple_of=args.pad_to_multiple_of,
                        max_shard_size=args.max_shard_size, overwrite=args.overwrite,
                        language=args.language.split(",") if args.language else None)
    print("\n".join(report.lines()))
    print(f"wrote {args.target_model_path}")
    return 0


if __name__ == "__main__":
    run_cli(main)
