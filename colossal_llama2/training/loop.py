"""The training run: validate inputs, build everything on the Booster, loop, log, checkpoint, stop cleanly.

Loss: each optimizer step averages the token losses over every label token of the step's window of
micro-batches on every data-parallel rank (sum of token losses / total label tokens). Each micro-batch
backpropagates ``its token-loss sum / window tokens * dp_size`` (the plugins average gradients over
data-parallel ranks; ddp sums them instead, see ddp_speed.py, and drops the ``* dp_size``), so micro-batch size and accumulation steps can be traded without changing the
gradient (mb 2 x acc 1 == mb 1 x acc 2).
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..dataset.loader import PaddingCollator, ResumableDistributedSampler, load_tokenized_dataset
from ..dataset.schema import IGNORE_INDEX
from ..utils.errors import UserInputError
from ..utils.fs import atomic_write_text
from ..utils.logging import get_logger
from . import checkpoint as ckpt
from .attention import choose_attn_implementation, model_inputs
from .ddp_speed import bf16_residual_stream, register_sum_gradients
from .freeze import freeze_non_embedding_params
from .fused_ops import fuse_llama_norms, fused_cross_entropy, resolve_fusion, shifted_labels
from .metrics import MetricsWriter, device_peak_tflops, flops_per_token, peak_memory
from .neftune import NEFTune
from .optim import default_warmup_steps, make_optimizer, make_scheduler
from .profiling import StepProfiler
from .step_metrics import DeviceScalars
from .plugins import LAZY_INIT_PLUGINS, check_plugin_args, make_plugin, precision_for

logger = get_logger(__name__)


class NonFiniteLoss(RuntimeError):
    pass


def validate_inputs(args: argparse.Namespace, cuda: bool, world_size: int):
    """Every check that needs no process group and no weights; identical on every rank.

    Returns (model config, dataset, eval dataset or None, the resolved --fused_ops/--fused_loss choice).
    """
    from transformers import AutoConfig

    for flag in ("micro_batch_size", "accumulation_steps", "num_epochs", "max_length", "save_interval"):
        if getattr(args, flag) < 1:
            raise UserInputError("must be >= 1", where=f"--{flag}")
    pretrained = Path(args.pretrained)
    if not (pretrained / "config.json").is_file():
        raise UserInputError(f"{pretrained} is not a Hugging Face model dir (no config.json)", where="--pretrained")
    config = AutoConfig.from_pretrained(str(pretrained))
    check_plugin_args(args.plugin, cuda=cuda, world_size=world_size, tp=args.tp,
                      num_heads=config.num_attention_heads,
                      num_kv_heads=getattr(config, "num_key_value_heads", None) or config.num_attention_heads,
                      mixed_precision=args.mixed_precision, vocab_size=config.vocab_size)
    from transformers import AutoTokenizer

    n_tokenizer = len(AutoTokenizer.from_pretrained(str(pretrained)))
    if n_tokenizer > config.vocab_size:
        raise UserInputError(f"the tokenizer in {pretrained} has {n_tokenizer} tokens but the model only "
                             f"{config.vocab_size} embedding rows (tokenizer/model mismatch: was the model grown "
                             f"with init_model.py?)", where="--pretrained")
    data = load_tokenized_dataset(args.dataset, flag="--dataset")
    eval_data = load_tokenized_dataset(args.eval_dataset, flag="--eval_dataset") if args.eval_dataset else None
    for ds, flag in ((data, "--dataset"), (eval_data, "--eval_dataset")):
        if ds is not None and ds.vocab_size > config.vocab_size:
            raise UserInputError(f"the data was tokenized with a vocabulary of {ds.vocab_size} tokens but the model "
                                 f"{pretrained} has only {config.vocab_size} embedding rows: wrong tokenizer or "
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
    if args.load_checkpoint:
        ckpt.checkpoint_kind(args.load_checkpoint)
    if not args.random_init:
        ckpt.weights_path(pretrained)
    if args.compile and args.plugin not in ("zero2", "zero2_cpu", "ddp"):
        raise UserInputError(f"not supported with --plugin {args.plugin} (Gemini's parameter hooks and "
                             f"shardformer's replaced forwards do not trace); use zero2 or ddp", where="--compile")
    fusion = resolve_fusion(args.fused_ops, args.fused_loss, args.plugin, cuda)  # raises for what cannot run
    if args.gc_interval < 0:
        raise UserInputError("must be >= 0", where="--gc_interval")
    if args.reduce_bucket_size_in_m < 1:
        raise UserInputError("must be >= 1", where="--reduce_bucket_size_in_m")
    if args.profile_steps and not _parse_profile_steps(args.profile_steps):
        raise UserInputError("expected FIRST:LAST optimizer steps, e.g. 10:12", where="--profile_steps")
    return config, data, eval_data, fusion


def _parse_profile_steps(text: str) -> tuple[int, int] | None:
    try:
        first, last = (int(x) for x in text.split(":"))
    except ValueError:
        return None
    return (first, last) if 1 <= first <= last else None


def _dp_info(plugin, plugin_name: str) -> tuple[int, int, object]:
    """(data-parallel size, data-parallel rank, group) — TP ranks of one replica must see the same data."""
    if plugin_name == "3d":
        return plugin.dp_size, dist.get_rank(plugin.dp_group), plugin.dp_group
    return dist.get_world_size(), dist.get_rank(), None


def _all_reduce(t: torch.Tensor, group=None) -> torch.Tensor:
    dist.all_reduce(t, group=group)
    return t


def train(args: argparse.Namespace, exit_process: bool = False) -> int:
    """Run training; returns the exit code (0 done, 3 non-finite loss).

    ``exit_process`` (train.py's command line): end the process at the end instead of returning, see
    ``leave_process``.
    """
    import colossalai
    from colossalai.booster import Booster
    from colossalai.lazy import LazyInitContext
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cuda = torch.cuda.is_available()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    config, data, eval_data, fusion = validate_inputs(args, cuda, world_size)
    if args.plugin == "ddp" and not cuda and args.mixed_precision:
        logger.warning("--mixed_precision %s ignored: the ddp plugin on CPU trains in fp32", args.mixed_precision)
    precision = precision_for(args.plugin, args.mixed_precision, cuda)

    colossalai.launch_from_torch(seed=args.seed, backend="nccl" if cuda else "gloo")
    rank = dist.get_rank()
    is_main = rank == 0
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")

    attn_impl = choose_attn_implementation(args.use_flash_attn, cuda, args.attention, args.plugin)
    isolate_documents = args.plugin != "3d"
    logger.info("plugin %s, precision %s, attention %s, packed documents %s, %s, world size %d", args.plugin,
                precision, attn_impl, "isolated" if isolate_documents else "NOT isolated (shardformer builds its own "
                "mask)", fusion.describe(), world_size)

    plugin = make_plugin(args.plugin, precision=precision, max_norm=args.gradient_clipping, tp=args.tp,
                         zero=args.zero, accumulation_steps=args.accumulation_steps,
                         reduce_bucket_size_in_m=args.reduce_bucket_size_in_m)
    booster = Booster(plugin=plugin, mixed_precision="fp16" if (args.plugin == "ddp" and cuda and
                                                              precision == "fp16") else None)
    dp_size, dp_rank, dp_group = _dp_info(plugin, args.plugin)

    tokenizer = AutoTokenizer.from_pretrained(args.pretrained)
    if data.chat_template and tokenizer.chat_template != data.chat_template:
        # Saved into every modeling/ dir, so chat and inference render turns exactly as SFT data did.
        tokenizer.chat_template = data.chat_template
        logger.info("SFT data: its chat template will be saved with the model's tokenizer")
    pad_id = tokenizer.eos_token_id if args.pad_token == "eos" else tokenizer.unk_token_id
    if args.config_file and is_main:
        atomic_write_text(args.config_file, json.dumps(vars(args), indent=2, sort_keys=True))

    # Model: lazily built and materialised already sharded where the plugin supports it.
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[precision]
    load_after_boost = args.plugin in LAZY_INIT_PLUGINS
    if load_after_boost:
        with LazyInitContext(default_device=device):
            model = AutoModelForCausalLM.from_config(config, attn_implementation=attn_impl, torch_dtype=torch.float32)
    elif args.random_init:
        torch.manual_seed(args.seed)  # identical on every rank
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config, attn_implementation=attn_impl, torch_dtype=torch.float32)
    else:
        model = AutoModelForCausalLM.from_pretrained(args.pretrained, attn_implementation=attn_impl,
                                                     torch_dtype=torch.float32)
    if args.use_grad_checkpoint:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if args.freeze_non_embeds_params:
        trainable, frozen = freeze_non_embedding_params(model)
        logger.info("--freeze_non_embeds_params: %d trainable, %d frozen parameters", trainable, frozen)
    num_params = sum(p.numel() for p in model.parameters())
    torch.manual_seed(args.seed + rank)  # distinct NEFTune noise per rank, reproducible

    # Data.
    sampler = ResumableDistributedSampler(len(data), dp_size, dp_rank, shuffle=True, seed=args.seed)
    if sampler.padding:
        logger.info("%d sample(s) repeated so that %d data-parallel ranks get equal shares", sampler.padding, dp_size)
    collator = PaddingCollator(pad_id, args.max_length, args.padding_mode)
    micro_batches_per_epoch = math.ceil(sampler.num_samples / args.micro_batch_size)
    steps_per_epoch = math.ceil(micro_batches_per_epoch / args.accumulation_steps)
    total_steps = steps_per_epoch * args.num_epochs
    if args.max_steps:
        total_steps = min(total_steps, args.max_steps)
    warmup = args.warmup_steps if args.warmup_steps is not None else default_warmup_steps(total_steps)

    if args.plugin == "ddp":
        model.to(device)  # the Booster would move it anyway; on CUDA, AdamW's fused kernel needs it there first
    optimizer = make_optimizer(model, lr=args.lr, weight_decay=args.weight_decay,
                               use_hybrid_adam=args.plugin != "ddp")
    lr_scheduler = make_scheduler(optimizer, warmup_steps=warmup, total_steps=total_steps)
    model, optimizer, _, _, lr_scheduler = booster.boost(model, optimizer, lr_scheduler=lr_scheduler)
    if load_after_boost and not args.random_init:
        booster.load_model(model, ckpt.weights_path(args.pretrained))

    start_epoch, start_step_in_epoch, global_step = 0, 0, 0
    if args.load_checkpoint:
        if ckpt.checkpoint_kind(args.load_checkpoint) == "full":
            states = ckpt.load_checkpoint(booster, model, optimizer, lr_scheduler, args.load_checkpoint)
            start_epoch, start_step_in_epoch = states["epoch"], states["step_in_epoch"]
            global_step = states["global_step"]
            sampler.load_state_dict(states["sampler"])
            if start_step_in_epoch >= steps_per_epoch:  # saved at the end of an epoch
                start_epoch, start_step_in_epoch = start_epoch + 1, 0
            logger.info("resumed from %s: epoch %d, step %d in epoch, global step %d", args.load_checkpoint,
                        start_epoch, start_step_in_epoch, global_step)
        else:
            booster.load_model(model, ckpt.weights_path(args.load_checkpoint))
            logger.info("loaded weights only from %s (fresh optimizer and schedule)", args.load_checkpoint)

    unwrapped = model.unwrap()
    if fusion.norm:
        logger.info("fused RMSNorm: %d modules run as F.rms_norm", fuse_llama_norms(unwrapped))
    if args.compile:
        # Per decoder layer, after boosting: the plugin's wrappers and hooks stay outside the compiled code.
        for layer in unwrapped.model.layers:
            layer.compile()
        logger.info("--compile: %d decoder layers compiled with torch.compile", len(unwrapped.model.layers))
    neft = NEFTune(unwrapped.get_input_embeddings(), args.neft_alpha) if args.use_neft else None
    # ddp on GPU: fp16 goes through the Booster's torch AMP (autocast + GradScaler); bf16 needs no scaler,
    # only autocast, which the Booster does not offer for it.
    ddp_autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) \
        if (args.plugin == "ddp" and cuda and precision == "bf16") else None
    if ddp_autocast is not None and fusion.norm:
        bf16_residual_stream(unwrapped)  # after NEFTune's hook: noise is added in fp32, then cast
    # ddp sums gradients over ranks instead of averaging them; the loss carries the 1/dp_size instead
    grad_average_factor = 1 if (args.plugin == "ddp" and register_sum_gradients(model)) else dp_size
    flops_tok = flops_per_token(num_params, config.num_hidden_layers, config.hidden_size, args.max_length)
    peak = device_peak_tflops(args.peak_tflops_per_device)
    metrics = MetricsWriter(args.tensorboard_dir, enabled=is_main)
    mem = peak_memory()
    logger.info("setup done: %d parameters, %d steps (%d per epoch, warmup %d), peak device memory %.2f GiB, "
                "peak host memory %.2f GiB", num_params, total_steps, steps_per_epoch, warmup,
                mem["peak_device_memory_gib"], mem["peak_host_memory_gib"])

    from .signals import GracefulStop

    stopper = GracefulStop(device).install()
    mask_dtype = dtype if precision != "fp32" else torch.float32
    use_no_sync = args.plugin == "ddp" and args.accumulation_steps > 1

    def forward_token_loss(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(sum of token losses, number of label tokens) for one micro-batch."""
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        if neft is not None:
            neft.set_lengths(batch["attention_mask"])
        inputs = model_inputs(batch, attn_implementation=attn_impl, isolate_documents=isolate_documents,
                              mask_dtype=mask_dtype)
        labels = batch["labels"]
        n_tokens = (labels[:, 1:] != IGNORE_INDEX).sum()
        if ddp_autocast is not None:
            with ddp_autocast():
                logits = model(**inputs).logits
        elif args.plugin == "3d":  # shardformer may keep logits vocab-sharded: let the model compute its loss
            out = model(**inputs, labels=labels)
            # out.loss is the mean over this micro-batch's label tokens (NaN when it has none)
            loss_sum = out.loss * n_tokens if n_tokens > 0 else out.logits.sum() * 0.0
            return loss_sum, n_tokens
        else:
            logits = model(**inputs).logits
        if fusion.loss:
            if type(logits) is not torch.Tensor:  # Gemini's ColoTensor: the compiled kernel takes plain tensors
                logits = logits.as_subclass(torch.Tensor)
            loss_sum = fused_cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                           shifted_labels(labels, IGNORE_INDEX).reshape(-1), ignore_index=IGNORE_INDEX,
                                           compiled=fusion.compile_loss)
        else:
            loss_sum = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                                       labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum")
        return loss_sum, n_tokens

    def evaluate(step: int) -> None:
        if eval_data is None:
            return
        categories = sorted(set(eval_data.dataset["category"]))
        cat_index = {c: i for i, c in enumerate(categories)}
        sums = torch.zeros(len(categories), dtype=torch.float64, device=device)
        counts = torch.zeros(len(categories), dtype=torch.float64, device=device)
        n = len(eval_data)
        per_rank = math.ceil(n / dp_size)
        model.eval()
        with torch.no_grad():
            for j in range(per_rank):  # every rank runs the same number of forwards (collectives match)
                index = j * dp_size + dp_rank
                sample = eval_data.dataset[index % n]
                loss_sum, n_tokens = forward_token_loss(collator([sample]))
                if index < n:
                    c = cat_index[sample["category"]]
                    sums[c] += loss_sum.double()
                    counts[c] += n_tokens.double()
        model.train()
        _all_reduce(sums, dp_group), _all_reduce(counts, dp_group)
        values = {f"eval/loss/{c}": (sums[i] / counts[i]).item() for i, c in enumerate(categories) if counts[i] > 0}
        values["eval/loss"] = (sums.sum() / counts.sum().clamp(min=1)).item()
        metrics.log(step, values)
        logger.info("eval at step %d: %s", step, ", ".join(f"{k}={v:.4f}" for k, v in values.items()))

    def save(epoch: int, step_in_epoch: int) -> Path | None:
        if args.no_save:
            return None
        running = {"step_in_epoch": step_in_epoch, "sampler": sampler.state_dict(),
                   "consumed_samples_global": global_step_samples[0]}
        return ckpt.save_checkpoint(booster, model, optimizer, lr_scheduler, save_dir=args.save_dir, epoch=epoch,
                                    global_step=global_step, running_states=running, tokenizer=tokenizer,
                                    keep_last=args.keep_last)

    from tqdm import tqdm

    global_step_samples = [global_step * args.micro_batch_size * args.accumulation_steps * dp_size]
    bar = tqdm(total=total_steps, initial=global_step, disable=not is_main, desc="train", dynamic_ncols=True)
    profiler = StepProfiler(_parse_profile_steps(args.profile_steps) if args.profile_steps else None,
                            args.tensorboard_dir, enabled=is_main)
    gc_control = GarbageCollection(args.gc_interval)
    t_start = time.time()
    last_saved = global_step if args.load_checkpoint else -1
    stopped_by = None
    epoch, step_in_epoch = start_epoch, start_step_in_epoch
    # The step whose scalars are still on their way to the host (read once the next step is queued).
    pending: dict | None = None

    def report(record: dict) -> None:
        """Log a finished step; raises NonFiniteLoss. Sets stopped_by when a rank was signalled."""
        nonlocal stopped_by
        values = record.pop("scalars").read()
        loss_value, step = values["loss"], record["step"]
        if not math.isfinite(loss_value):
            raise NonFiniteLoss(f"loss is {loss_value} at step {step} (epoch {record['epoch']}); stopping. "
                                f"The last good checkpoint is kept in {args.save_dir}")
        if stopper.decide(values["stop"]) and stopped_by is None:
            stopped_by = stopper.signal_name
        tokens_per_s = values["input_tokens"] / max(record["seconds"], 1e-9)
        tflops = flops_tok * tokens_per_s / 1e12
        metrics.log(step, {"loss": loss_value, "lr": record["lr"], "grad_norm": values["grad_norm"],
                           "tokens_per_s": tokens_per_s, "tflops": tflops,
                           "mfu": tflops / (peak * world_size) if peak else None, "epoch": record["epoch"],
                           "elapsed": record["elapsed"]})
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{record['lr']:.2e}")

    def flush() -> None:
        nonlocal pending
        if pending is not None:
            record, pending = pending, None
            report(record)

    model.train()
    optimizer.zero_grad()
    try:
        for epoch in range(start_epoch, args.num_epochs):
            sampler.set_epoch(epoch)
            loader = torch.utils.data.DataLoader(data.dataset, batch_size=args.micro_batch_size, sampler=sampler,
                                                 collate_fn=collator, num_workers=args.num_workers,
                                                 pin_memory=cuda,  # so the copies below need not wait for the GPU
                                                 generator=torch.Generator().manual_seed(args.seed + epoch))
            # ^ its own generator: creating a DataLoader iterator otherwise draws from the global RNG, which
            # would shift NEFTune's noise between an uninterrupted and a resumed run.
            step_in_epoch = start_step_in_epoch if epoch == start_epoch else 0
            batches = iter(loader)
            step_began = time.time()
            while step_in_epoch < steps_per_epoch and global_step < total_steps:
                profiler.before_step(global_step + 1)
                window = []
                for _ in range(args.accumulation_steps):
                    batch = next(batches, None)
                    if batch is None:
                        break
                    sampler.advance(batch["input_ids"].shape[0])
                    window.append({k: v.to(device, non_blocking=True) for k, v in batch.items()})
                # token counts on the device: no host round trip before the step can start
                window_tokens = _all_reduce(sum((b["labels"][:, 1:] != IGNORE_INDEX).sum() for b in window).float(),
                                            dp_group)
                input_tokens = _all_reduce(sum(b["attention_mask"].sum() for b in window).float(), dp_group)
                step_loss = torch.zeros((), dtype=torch.float64, device=device)
                for i, batch in enumerate(window):
                    last = i == len(window) - 1
                    sync = booster.no_sync(model, optimizer) if (use_no_sync and not last) else contextlib.nullcontext()
                    with sync:
                        loss_sum, _ = forward_token_loss(batch)
                        loss = loss_sum / window_tokens.clamp(min=1) * grad_average_factor
                        booster.backward(loss, optimizer)
                    step_loss += loss_sum.detach().double()
                grad_norm = None
                if args.plugin == "ddp":  # with clipping off, an infinite bound just measures the norm
                    grad_norm = optimizer.clip_grad_by_norm(args.gradient_clipping or float("inf"))
                optimizer.step()
                if grad_norm is None:
                    with contextlib.suppress(Exception):
                        grad_norm = optimizer.get_grad_norm()
                lr = lr_scheduler.get_last_lr()[0]
                lr_scheduler.step()
                optimizer.zero_grad()
                _all_reduce(step_loss, dp_group)
                step_in_epoch += 1
                global_step += 1
                global_step_samples[0] += sum(b["input_ids"].shape[0] for b in window) * dp_size
                now = time.time()
                record = {"step": global_step, "epoch": epoch, "lr": lr, "seconds": now - step_began,
                          "elapsed": now - t_start,
                          "scalars": DeviceScalars({"loss": step_loss / window_tokens.clamp(min=1),
                                                    "input_tokens": input_tokens, "stop": stopper.flag(),
                                                    "grad_norm": grad_norm})}
                step_began = now
                flush()  # the previous step: its values arrived while this one was queued
                pending = record
                profiler.after_step(global_step)
                due_eval = bool(args.eval_interval) and global_step % args.eval_interval == 0
                due_save = global_step % args.save_interval == 0
                if due_eval or due_save or stopped_by or global_step >= total_steps:
                    flush()  # these need this step's loss checked first
                if due_eval:
                    evaluate(global_step)
                if stopped_by:
                    break
                gc_control.after_step(global_step)
                if due_save:
                    save(epoch, step_in_epoch)
                    last_saved = global_step
            flush()
            if stopped_by or global_step >= total_steps:
                break
        if stopped_by:
            logger.warning("%s received: saving a checkpoint at step %d and stopping", stopped_by, global_step)
        elif not args.eval_interval or global_step % args.eval_interval:
            evaluate(global_step)
        if last_saved != global_step:
            save(epoch, step_in_epoch)
    except NonFiniteLoss as err:  # every rank sees the same all-reduced loss, so all stop here together
        logger.error("%s", err)
        code = 3
    else:
        code = 0
    finally:
        bar.close()
        metrics.close()
        stopper.restore()
        gc_control.restore()
    if code == 0:
        logger.info("done: %d steps, %.1f s, %s", global_step, time.time() - t_start,
                    json.dumps(peak_memory()))
    if exit_process:
        leave_process(code)
    dist.destroy_process_group()
    return code


class GarbageCollection:
    """Python's garbage collector on a schedule instead of whenever allocations cross a threshold.

    The training step is host-bound (docs/benchmarks.md): an automatic full collection in the middle of a
    step (tens of ms with transformers, colossalai and datasets loaded) stalls the GPU. With ``interval`` > 0
    what exists at the start is frozen out of future collections and a young-generation collection runs
    every ``interval`` optimizer steps, at a step boundary. 0 keeps Python's default behaviour.
    """

    def __init__(self, interval: int):
        self.interval = interval
        self.was_enabled = gc.isenabled()
        if interval > 0:
            gc.collect()
            gc.freeze()
            gc.disable()

    def after_step(self, step: int) -> None:
        if self.interval > 0 and step % self.interval == 0:
            gc.collect(1)

    def restore(self) -> None:
        if self.interval > 0:
            gc.unfreeze()
            if self.was_enabled:
                gc.enable()


def leave_process(code: int) -> None:
    """End a finished run: wait for every rank, flush, and exit without tearing DDP down.

    Seen with torch 2.13 + gloo: when a rank's DDP Reducer is freed after its peer has exited,
    ProcessGroupGloo's destructor waits forever for queued work (finished runs that never exit). Every
    file is already closed or atomically renamed at this point, so nothing is lost by skipping teardown.
    """
    import logging
    import sys

    with contextlib.suppress(Exception):
        dist.barrier()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
