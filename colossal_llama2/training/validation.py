"""Every check of train.py's inputs that needs no process group and no weights: run before any heavy work.

The checks are identical on every rank, so every rank fails the same way with the same message.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import torch

from ..dataset.loader import TokenizedDataset, load_tokenized_dataset
from ..utils.errors import UserInputError
from ..utils.remote_code import refuse_remote_code
from ..utils.logging import get_logger
from .checkpoint import directory as ckpt
from .kernels.fp8 import check_fp8
from .kernels.fused_ops import Fusion, resolve_fusion
from .optim import check_optimizer
from .plugins.factory import check_plugin_args, colossalai_has_policy, precision_for
from .plugins.tensor_parallel import check_config_shardable
from .trackers import parse_report_to

logger = get_logger(__name__)


@dataclass
class RunInputs:
    """What validation loaded on the way: the model config, the datasets and the resolved fusion choice."""
    config: object  # transformers PretrainedConfig
    data: TokenizedDataset
    eval_data: TokenizedDataset | None
    fusion: Fusion
    load_checkpoint: Path | None  # --load_checkpoint with `latest` resolved


def validate_inputs(args: argparse.Namespace, cuda: bool, world_size: int) -> RunInputs:
    """Raise UserInputError, naming the flag, for anything that cannot run; otherwise return the inputs."""
    _check_positive_flags(args)
    parse_report_to(args.report_to)
    config = _load_model_config(args)
    if args.plugin == "auto":
        _resolve_auto_plugin(args, config, cuda, world_size)
    elif args.plugin == "gemini" and cuda:
        _warn_if_zero2_fits(args, config, world_size)
    own_policy = args.plugin == "3d" and not colossalai_has_policy(config)
    if own_policy and args.tp > 1:
        check_config_shardable(config, args.tp)  # our policy shards it (plugins/tensor_parallel.py)
    check_plugin_args(args.plugin, cuda=cuda, world_size=world_size, tp=args.tp,
                      num_heads=config.num_attention_heads,
                      num_kv_heads=getattr(config, "num_key_value_heads", None) or config.num_attention_heads,
                      mixed_precision=args.mixed_precision, vocab_size=None if own_policy else config.vocab_size)
    check_optimizer(args.optimizer, plugin=args.plugin, precision=precision_for(args.plugin, args.mixed_precision, cuda))
    tokenizer = _check_tokenizer_fits(args.pretrained, config)
    data = load_tokenized_dataset(args.dataset, flag="--dataset")
    eval_data = load_tokenized_dataset(args.eval_dataset, flag="--eval_dataset") if args.eval_dataset else None
    _check_data_fits(args, config, data, eval_data)
    _check_same_tokenizer(args, tokenizer, data, eval_data)
    load_checkpoint = None
    if args.load_checkpoint:
        load_checkpoint = ckpt.resolve_load_checkpoint(args.load_checkpoint, args.save_dir)
        ckpt.checkpoint_kind(load_checkpoint)
        ckpt.check_same_model(load_checkpoint, config)
    if not args.random_init:
        ckpt.weights_path(args.pretrained)
    fusion = _check_speed_flags(args, cuda, getattr(config, "model_type", None))
    return RunInputs(config=config, data=data, eval_data=eval_data, fusion=fusion, load_checkpoint=load_checkpoint)


def _check_positive_flags(args: argparse.Namespace) -> None:
    for flag in ("micro_batch_size", "accumulation_steps", "num_epochs", "max_length", "save_interval"):
        if getattr(args, flag) < 1:
            raise UserInputError("must be >= 1", where=f"--{flag}")
    if args.gc_interval < 0:
        raise UserInputError("must be >= 0", where="--gc_interval")
    if args.reduce_bucket_size_in_m < 1:
        raise UserInputError("must be >= 1", where="--reduce_bucket_size_in_m")
    if args.zero_gather_chunk_in_m < 0:
        raise UserInputError("must be >= 0 (0: gather after the whole update)", where="--zero_gather_chunk_in_m")
    if args.profile_steps and not parse_profile_steps(args.profile_steps):
        raise UserInputError("expected FIRST:LAST optimizer steps, e.g. 10:12", where="--profile_steps")


def _resolve_auto_plugin(args: argparse.Namespace, config, cuda: bool, world_size: int) -> None:
    """--plugin auto -> the fastest plugin that fits by plugin_choice's estimate; logged with the reason."""
    import torch

    from .plugins.choice import ModelShape, choose_plugin

    device_bytes = (min(torch.cuda.get_device_properties(i).total_memory for i in range(torch.cuda.device_count()))
                    if cuda else 0)
    args.plugin, why = choose_plugin(ModelShape.of(config), cuda=cuda, gpus=world_size, device_bytes=device_bytes,
                                     tokens_per_micro_batch=args.micro_batch_size * args.max_length,
                                     grad_checkpoint=args.use_grad_checkpoint, optimizer=args.optimizer)
    logger.info("--plugin auto chose %s: %s", args.plugin, why)


def _warn_if_zero2_fits(args: argparse.Namespace, config, world_size: int) -> None:
    from .plugins.choice import ModelShape, gemini_warning

    device_bytes = min(torch.cuda.get_device_properties(i).total_memory for i in range(torch.cuda.device_count()))
    warning = gemini_warning(ModelShape.of(config), gpus=world_size, device_bytes=device_bytes,
                             tokens_per_micro_batch=args.micro_batch_size * args.max_length,
                             grad_checkpoint=args.use_grad_checkpoint)
    if warning:
        logger.warning(warning)


def _load_model_config(args: argparse.Namespace):
    from transformers import AutoConfig

    pretrained = Path(args.pretrained)
    if not (pretrained / "config.json").is_file():
        raise UserInputError(f"{pretrained} is not a Hugging Face model dir (no config.json)", where="--pretrained")
    refuse_remote_code(pretrained, "--pretrained")
    return AutoConfig.from_pretrained(str(pretrained), trust_remote_code=False)


def _check_tokenizer_fits(pretrained: str, config):
    """The model dir's tokenizer, refused when it has more tokens than the model has embedding rows."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(pretrained), trust_remote_code=False)
    if len(tokenizer) > config.vocab_size:
        raise UserInputError(f"the tokenizer in {pretrained} has {len(tokenizer)} tokens but the model only "
                             f"{config.vocab_size} embedding rows (tokenizer/model mismatch: was the model grown "
                             f"with init_model.py?)", where="--pretrained")
    return tokenizer


def _check_same_tokenizer(args: argparse.Namespace, tokenizer, data: TokenizedDataset,
                          eval_data: TokenizedDataset | None) -> None:
    """The data was prepared with --pretrained's tokenizer (the digest data preparation recorded), or refused."""
    from ..tokenizer.identity import tokenizer_digest

    ours = tokenizer_digest(tokenizer)
    for ds, flag in ((data, "--dataset"), (eval_data, "--eval_dataset")):
        if ds is None:
            continue
        theirs = ds.tokenizer_digests - {None}
        if None in ds.tokenizer_digests:
            logger.warning("%s: parts prepared before tokenizer digests were recorded: whether they were tokenized "
                           "with %s's tokenizer cannot be checked", flag, args.pretrained)
        if theirs - {ours}:
            message = (f"prepared with another tokenizer ({', '.join(sorted(ds.tokenizer_dirs))}, digest "
                       f"{', '.join(sorted(theirs))}) than --pretrained's ({args.pretrained}, digest {ours}): its "
                       f"token ids would mean other text; prepare it with --tokenizer_dir {args.pretrained}")
            if not args.allow_tokenizer_mismatch:
                raise UserInputError(message + " (or pass --allow_tokenizer_mismatch)", where=flag)
            logger.warning("%s: %s; training anyway (--allow_tokenizer_mismatch)", flag, message)


def _check_data_fits(args: argparse.Namespace, config, data: TokenizedDataset,
                     eval_data: TokenizedDataset | None) -> None:
    for ds, flag in ((data, "--dataset"), (eval_data, "--eval_dataset")):
        if ds is not None and ds.vocab_size > config.vocab_size:
            raise UserInputError(f"the data was tokenized with a vocabulary of {ds.vocab_size} tokens but the model "
                                 f"{args.pretrained} has only {config.vocab_size} embedding rows: wrong tokenizer or "
                                 f"model (after extending the vocabulary, train the grown model)", where=flag)
    if data.max_length > args.max_length:
        raise UserInputError(f"the dataset holds samples of up to {data.max_length} tokens (its preparation "
                             f"max_length) but --max_length is {args.max_length}: samples would be cut; pass "
                             f"--max_length {data.max_length} or prepare the data again", where="--max_length")
    if args.max_length > data.max_length:
        raise UserInputError(f"--max_length {args.max_length} is above the dataset's max_length {data.max_length}: "
                             f"no sample is that long (wrong dataset?); pass --max_length {data.max_length}",
                             where="--max_length")
    if eval_data is not None and eval_data.max_length > args.max_length:
        raise UserInputError(f"eval samples reach {eval_data.max_length} tokens, above --max_length "
                             f"{args.max_length}", where="--eval_dataset")
    max_pos = getattr(config, "max_position_embeddings", None)
    if max_pos and args.max_length > max_pos:
        raise UserInputError(f"above the model's max_position_embeddings {max_pos}", where="--max_length")


def _check_speed_flags(args: argparse.Namespace, cuda: bool, model_type: str | None) -> Fusion:
    if args.compile and args.plugin not in ("zero2", "zero2_cpu", "ddp"):
        raise UserInputError(f"not supported with --plugin {args.plugin} (Gemini's parameter hooks and "
                             f"shardformer's replaced forwards do not trace); use zero2 or ddp", where="--compile")
    check_fp8(args.fp8, plugin=args.plugin, capability=torch.cuda.get_device_capability() if cuda else None,
              experimental=args.fp8_experimental, max_length=args.max_length)
    return resolve_fusion(args.fused_ops, args.fused_loss, args.plugin, cuda, model_type)  # raises if it cannot run


def parse_profile_steps(text: str) -> tuple[int, int] | None:
    """'FIRST:LAST' -> (FIRST, LAST), or None when it is not two increasing positive step numbers."""
    try:
        first, last = (int(x) for x in text.split(":"))
    except ValueError:
        return None
    return (first, last) if 1 <= first <= last else None
