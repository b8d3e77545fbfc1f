"""The training run: ``Trainer`` builds the parts, then ``run`` loops over optimizer steps using only them.

    build (validate -> distributed -> booster -> model -> data -> optimizer -> boost -> resume -> patches)
    for each step: batches -> forward/backward/step -> metrics -> maybe evaluate -> maybe save -> maybe stop

Where things live: input checks in validation.py; the model and every patch of it in model_setup.py; the
plugin and Booster in plugins.py; one micro-batch's loss in token_loss.py; evaluation in evaluation.py;
checkpoints and resume in checkpoint.py; per-step metrics in step_metrics.py; signals in signals.py; the
garbage collector and the process exit in process.py.

Loss: each optimizer step averages the token losses over every label token of the step's window of
micro-batches on every data-parallel rank (sum of token losses / total label tokens). Each micro-batch
backpropagates ``its token-loss sum / window tokens * dp_size`` (the plugins average gradients over
data-parallel ranks; ddp sums them instead, see ddp_speed.py, and drops the ``* dp_size``), so micro-batch
size and accumulation steps can be traded without changing the gradient (mb 2 x acc 1 == mb 1 x acc 2).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

import torch
import torch.distributed as dist

from ..dataset.loader import PaddingCollator, ResumableDistributedSampler
from ..dataset.schema import IGNORE_INDEX
from ..model.model_card import arguments_lines, base_model_of, language_of, write_card
from ..utils.fs import atomic_write_text
from ..utils.logging import get_logger
from .checkpoint import directory as ckpt
from .kernels.compile_watch import CompileWatch
from .plugins.ddp_speed import register_sum_gradients
from .evaluation import evaluate
from .metrics import MetricsWriter, device_peak_tflops, flops_per_token, peak_memory
from .plugins.choice import oom_hint
from .kernels.fp8 import FP8_TOKEN_MULTIPLE
from .model_setup import DTYPES, apply_patches_after_boost, build_model, plan_model_patches, stop_generation_at
from .optim import StepPlan, keeps_master_weights, make_optimizer, make_scheduler
from .plugins.factory import colossalai_has_policy, data_parallel, make_booster, make_plugin, precision_for
from .lifecycle.launcher import spawn_reaper
from .lifecycle.process import GarbageCollection, leave_process
from .lifecycle.process_group import check_shared_save_dir, is_peer_failure, lost_peer, start_process_group
from .profiling import StepProfiler, phase
from .lifecycle.signals import GracefulStop
from .trackers import parse_report_to
from .step_metrics import DeviceScalars, NonFiniteLoss, StepRecord, StepReporter
from .token_loss import TokenLoss
from .validation import parse_profile_steps, validate_inputs
from .plugins.zero_reduction import speed_up_zero_reduction
from .plugins.zero_step import speed_up_zero_optimizer

logger = get_logger(__name__)


# The arguments a saved model's card lists.
CARD_ARGUMENTS = ("plugin", "optimizer", "lr", "micro_batch_size", "accumulation_steps", "max_length", "num_epochs",
                  "max_steps", "warmup_steps", "weight_decay", "gradient_clipping", "mixed_precision", "seed",
                  "use_neft", "freeze_non_embeds_params", "use_grad_checkpoint")


def train(args: argparse.Namespace, exit_process: bool = False) -> int:
    """Run training; returns the exit code (0 done or stopped by a signal, 3 non-finite loss).

    ``exit_process`` (train.py's command line): end the process at the end instead of returning, see
    ``leave_process``.
    """
    trainer = None
    try:
        trainer = Trainer(args)
        code = trainer.run()
    except Exception as err:
        if not is_peer_failure(err):
            raise
        progress = getattr(trainer, "progress", None)
        failure = lost_peer(err, step=progress.global_step if progress else 0, timeout_s=args.dist_timeout_s,
                            last_checkpoint=getattr(trainer, "last_checkpoint", None))
        if not exit_process:
            raise failure from None
        print(f"error: {failure}", file=sys.stderr, flush=True)
        os._exit(failure.exit_code)  # no teardown: collectives with the lost peer would wait again
    if exit_process:
        leave_process(code)
    dist.destroy_process_group()
    return code


class Trainer:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.cuda = torch.cuda.is_available()
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        inputs = validate_inputs(args, self.cuda, self.world_size)
        self.config, self.data, self.eval_data = inputs.config, inputs.data, inputs.eval_data
        self.load_checkpoint = inputs.load_checkpoint
        if args.plugin == "ddp" and not self.cuda and args.mixed_precision:
            logger.warning("--mixed_precision %s ignored: the ddp plugin on CPU trains in fp32", args.mixed_precision)
        self.precision = precision_for(args.plugin, args.mixed_precision, self.cuda)
        self._start_distributed()
        self.patches = plan_model_patches(args, inputs.fusion, self.precision, self.cuda)
        logger.info("plugin %s, precision %s%s, optimizer %s, %s, world size %d", args.plugin, self.precision,
                    "" if args.mixed_precision or not self.cuda else " (the GPU's default)", args.optimizer,
                    self.patches.describe(), self.world_size)
        self.plugin = make_plugin(args.plugin, precision=self.precision, max_norm=args.gradient_clipping, tp=args.tp,
                                  zero=args.zero, accumulation_steps=args.accumulation_steps,
                                  reduce_bucket_size_in_m=args.reduce_bucket_size_in_m,
                                  master_weights=keeps_master_weights(args.optimizer),
                                  colossalai_policy=args.plugin == "3d" and colossalai_has_policy(self.config))
        self.booster = make_booster(args.plugin, self.plugin, self.precision, self.cuda)
        self.dp = data_parallel(self.plugin, args.plugin)
        self.tokenizer = self._load_tokenizer()
        if args.config_file and self.is_main:
            atomic_write_text(args.config_file, json.dumps(vars(args), indent=2, sort_keys=True))
            logger.info("arguments in %s, metrics in %s", args.config_file, args.tensorboard_dir)
        model = build_model(args, self.config, self.patches, self.device)
        if self.data.end_of_turn_tokens:
            logger.info("generation stops at token ids %s (the chat template's end of turn %s)",
                        stop_generation_at(model, self.tokenizer, self.data.end_of_turn_tokens),
                        ", ".join(self.data.end_of_turn_tokens))
        self.num_params = sum(p.numel() for p in model.parameters())
        torch.manual_seed(args.seed + self.rank)  # distinct NEFTune noise per rank, reproducible
        self._build_data()
        self._boost(model)
        self.progress = (ckpt.resume(self.load_checkpoint, self.booster, self.model, self.optimizer,
                                     self.lr_scheduler, self.sampler, steps_per_epoch=self.plan.steps_per_epoch,
                                     samples_per_step=self.samples_per_step)
                         if self.load_checkpoint else ckpt.Progress())
        self.last_checkpoint = self.load_checkpoint
        self.last_eval: tuple[int, dict] | None = None
        self._categories: Counter | None = None
        self._build_step_parts()

    # ---- build ---------------------------------------------------------------------------------------

    def _start_distributed(self) -> None:
        start_process_group(self.args.dist_timeout_s, self.args.seed)
        if not self.args.no_save:
            check_shared_save_dir(self.args.save_dir)
        self.rank = dist.get_rank()
        self.is_main = self.rank == 0
        self.device = torch.device("cuda", torch.cuda.current_device()) if self.cuda else torch.device("cpu")

    def _load_tokenizer(self):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(self.args.pretrained, trust_remote_code=False)
        if self.data.chat_template and tokenizer.chat_template != self.data.chat_template:
            # Saved into every modeling/ dir, so chat and inference render turns exactly as SFT data did.
            if tokenizer.chat_template:
                logger.warning("SFT data was rendered with another chat template than the tokenizer's own: the saved "
                               "models carry the data's (prepare with --chat_template model to keep the model's)")
            else:
                logger.info("SFT data: its chat template will be saved with the model's tokenizer")
            tokenizer.chat_template = self.data.chat_template
        return tokenizer

    def _build_data(self) -> None:
        args = self.args
        self.sampler = ResumableDistributedSampler(len(self.data), self.dp.size, self.dp.rank, shuffle=True,
                                                   seed=args.seed)
        if self.sampler.padding:
            logger.info("%d sample(s) repeated so that %d data-parallel ranks get equal shares",
                        self.sampler.padding, self.dp.size)
        pad_id = self.tokenizer.eos_token_id if args.pad_token == "eos" else self.tokenizer.unk_token_id
        self.collator = PaddingCollator(pad_id, args.max_length, args.padding_mode,
                                        pad_to_multiple_of=FP8_TOKEN_MULTIPLE if args.fp8 != "off" else 1)
        self.plan = StepPlan.make(self.sampler.num_samples, micro_batch_size=args.micro_batch_size,
                                  accumulation_steps=args.accumulation_steps, num_epochs=args.num_epochs,
                                  max_steps=args.max_steps, warmup_steps=args.warmup_steps)
        self.samples_per_step = args.micro_batch_size * args.accumulation_steps * self.dp.size

    def _boost(self, model: torch.nn.Module) -> None:
        """Optimizer and schedule, then the Booster wraps all three (and loads lazily-built weights)."""
        args = self.args
        if args.plugin == "ddp":
            model.to(self.device)  # the Booster would move it anyway; on CUDA, AdamW's fused kernel needs it first
        optimizer = make_optimizer(model, lr=args.lr, weight_decay=args.weight_decay,
                                   use_hybrid_adam=args.plugin != "ddp", kind=args.optimizer)
        lr_scheduler = make_scheduler(optimizer, warmup_steps=self.plan.warmup_steps,
                                      total_steps=self.plan.total_steps)
        self.model, self.optimizer, _, _, self.lr_scheduler = self.booster.boost(model, optimizer,
                                                                                 lr_scheduler=lr_scheduler)
        if self.patches.lazy_init and not args.random_init:
            ckpt.load_weights(self.booster, self.model, args.pretrained)
        if args.plugin in ("zero2", "zero2_cpu"):
            self._speed_up_zero()

    def _speed_up_zero(self) -> None:
        """zero2's own step and gradient reduction in place of the library's (--zero_step, --zero_reduce)."""
        args = self.args
        installed = []
        if args.zero_step == "fast":
            installed.append(speed_up_zero_optimizer(self.optimizer,
                                                     gather_chunk_numel=args.zero_gather_chunk_in_m << 20))
        if args.zero_reduce == "fast":
            installed.append(speed_up_zero_reduction(self.optimizer))
        for what in filter(None, installed):
            logger.info("zero2: %s", what)

    def _build_step_parts(self) -> None:
        """Patches of the boosted model, the loss, and what each step reports to."""
        args = self.args
        neftune = apply_patches_after_boost(self.model.unwrap(), self.patches)
        dtype = DTYPES[self.precision]
        self.token_loss = TokenLoss(self.model, self.patches, device=self.device,
                                    mask_dtype=dtype if self.precision != "fp32" else torch.float32,
                                    model_computes_loss=args.plugin == "3d", neftune=neftune)
        # ddp sums gradients over ranks instead of averaging them; the loss carries the 1/dp_size instead
        summed = args.plugin == "ddp" and register_sum_gradients(self.model)
        self.grad_average_factor = 1 if summed else self.dp.size
        self.use_no_sync = args.plugin == "ddp" and args.accumulation_steps > 1
        self.reporter = StepReporter(
            MetricsWriter(args.tensorboard_dir, enabled=self.is_main, report_to=parse_report_to(args.report_to),
                          run_name=Path(args.save_dir).name, config=vars(args)), total_steps=self.plan.total_steps,
            initial_step=self.progress.global_step, enabled=self.is_main,
            flops_per_token=flops_per_token(self.num_params, self.config.num_hidden_layers, self.config.hidden_size,
                                            args.max_length),
            peak_tflops=device_peak_tflops(args.peak_tflops_per_device), world_size=self.world_size,
            save_dir=args.save_dir)
        self.profiler = StepProfiler(parse_profile_steps(args.profile_steps) if args.profile_steps else None,
                                     args.tensorboard_dir, enabled=self.is_main)
        self.compile_watch = CompileWatch(enabled=self.patches.compile_layers and self.is_main)
        mem = peak_memory()
        logger.info("setup done: %d parameters, %d steps (%d per epoch, warmup %d), peak device memory %.2f GiB, "
                    "peak host memory %.2f GiB", self.num_params, self.plan.total_steps, self.plan.steps_per_epoch,
                    self.plan.warmup_steps, mem["peak_device_memory_gib"], mem["peak_host_memory_gib"])
        self.stopper = GracefulStop(self.device).install()
        self.stopped_by: str | None = None  # what stopped the run early (a signal, the launcher's exit)

    # ---- run -----------------------------------------------------------------------------------------

    def run(self) -> int:
        gc_control = GarbageCollection(self.args.gc_interval)
        t_start = time.time()
        try:
            self.model.train()
            self.optimizer.zero_grad()
            for epoch in range(self.progress.epoch, self.args.num_epochs):
                self._train_epoch(epoch, gc_control, t_start)
                if self.stopped_by or self.progress.global_step >= self.plan.total_steps:
                    break
            self._finish()
            if self.stopped_by:
                self._report_stop()
            else:
                self._reap_dead_launcher()
        except NonFiniteLoss as err:  # every rank sees the same all-reduced loss, so all stop here together
            logger.error("%s", err)
            return 3
        except torch.cuda.OutOfMemoryError:
            logger.error("out of GPU memory at step %d with --plugin %s: %s", self.progress.global_step + 1,
                         self.args.plugin, oom_hint(self.args.plugin, self.args.use_grad_checkpoint,
                                                    self.args.micro_batch_size))
            raise
        finally:
            self.reporter.close()
            self.stopper.restore()
            gc_control.restore()
        if not self.stopped_by:
            logger.info("done: %d steps, %.1f s, %s", self.progress.global_step, time.time() - t_start,
                        json.dumps(peak_memory()))
        return 0

    def _train_epoch(self, epoch: int, gc_control: GarbageCollection, t_start: float) -> None:
        args, progress = self.args, self.progress
        self.sampler.set_epoch(epoch)
        if epoch != progress.epoch:
            progress.epoch, progress.step_in_epoch = epoch, 0
        batches = iter(self._loader(epoch))
        step_began = time.time()
        while progress.step_in_epoch < self.plan.steps_per_epoch and progress.global_step < self.plan.total_steps:
            self.profiler.before_step(progress.global_step + 1)
            with phase("batches"):
                window = self._next_window(batches)
            lr = float(self.lr_scheduler.get_last_lr()[0])  # a tensor for torchao optimizers
            scalars = self._train_step(window)
            progress.step_in_epoch += 1
            progress.global_step += 1
            progress.consumed_samples += sum(b["input_ids"].shape[0] for b in window) * self.dp.size
            now = time.time()
            record = StepRecord(step=progress.global_step, epoch=epoch, lr=lr, seconds=now - step_began,
                                elapsed=now - t_start, scalars=DeviceScalars({**scalars, "stop": self.stopper.flag()}))
            step_began = now
            with phase("report"):
                self._check_stop(self.reporter.push(record))
            self.profiler.after_step(progress.global_step)
            self.compile_watch.after_step(progress.global_step)
            due_eval = bool(args.eval_interval) and progress.global_step % args.eval_interval == 0
            due_save = progress.global_step % args.save_interval == 0
            if due_eval or due_save or self.stopped_by or progress.global_step >= self.plan.total_steps:
                self._check_stop(self.reporter.flush())  # these need this step's loss checked first
            if due_eval:
                self._evaluate()
            if self.stopped_by:
                break
            gc_control.after_step(progress.global_step)
            if due_save:
                self._save()
        self._check_stop(self.reporter.flush())

    def _loader(self, epoch: int) -> torch.utils.data.DataLoader:
        # Its own generator: creating a DataLoader iterator otherwise draws from the global RNG, which would
        # shift NEFTune's noise between an uninterrupted and a resumed run.
        return torch.utils.data.DataLoader(self.data.dataset, batch_size=self.args.micro_batch_size,
                                           sampler=self.sampler, collate_fn=self.collator,
                                           num_workers=self.args.num_workers,
                                           pin_memory=self.cuda,  # so the copies below need not wait for the GPU
                                           generator=torch.Generator().manual_seed(self.args.seed + epoch))

    def _next_window(self, batches) -> list[dict]:
        """The step's micro-batches (fewer at the end of an epoch), already on their way to the device."""
        window = []
        for _ in range(self.args.accumulation_steps):
            batch = next(batches, None)
            if batch is None:
                break
            self.sampler.advance(batch["input_ids"].shape[0])
            window.append({k: v.to(self.device, non_blocking=True) for k, v in batch.items()})
        return window

    def _train_step(self, window: list[dict]) -> dict:
        """Forward/backward over the window, then one optimizer step; returns its scalars, still on the device."""
        # token counts on the device: no host round trip before the step can start
        window_tokens = self.dp.all_reduce(sum((b["labels"][:, 1:] != IGNORE_INDEX).sum() for b in window).float())
        input_tokens = self.dp.all_reduce(sum(b["attention_mask"].sum() for b in window).float())
        step_loss = torch.zeros((), dtype=torch.float64, device=self.device)
        for i, batch in enumerate(window):
            last = i == len(window) - 1
            sync = (self.booster.no_sync(self.model, self.optimizer) if (self.use_no_sync and not last)
                    else contextlib.nullcontext())
            with sync:
                with phase("forward"):
                    loss_sum, _ = self.token_loss(batch)
                with phase("backward"):
                    self.booster.backward(loss_sum / window_tokens.clamp(min=1) * self.grad_average_factor,
                                          self.optimizer)
            step_loss += loss_sum.detach().double()
        with phase("optimizer"):
            grad_norm = self._optimizer_step()
        self.dp.all_reduce(step_loss)
        return {"loss": step_loss / window_tokens.clamp(min=1), "input_tokens": input_tokens, "grad_norm": grad_norm}

    def _optimizer_step(self):
        """Clip (ddp here; the other plugins clip inside step), step, schedule; returns the gradient norm."""
        grad_norm = None
        if self.args.plugin == "ddp":  # with clipping off, an infinite bound just measures the norm
            grad_norm = self.optimizer.clip_grad_by_norm(self.args.gradient_clipping or float("inf"))
        self.optimizer.step()
        if grad_norm is None:
            with contextlib.suppress(Exception):
                grad_norm = self.optimizer.get_grad_norm()
        self.lr_scheduler.step()
        self.optimizer.zero_grad()
        return grad_norm

    def _check_stop(self, values: dict | None) -> None:
        """Every rank reads the same all-reduced stop flag of a reported step, so all stop after the same one."""
        if values is not None and self.stopper.decide(values["stop"]) and self.stopped_by is None:
            self.stopped_by = self.stopper.signal_name

    # ---- evaluate, save, finish ----------------------------------------------------------------------

    def _evaluate(self) -> None:
        if self.eval_data is None:
            return
        values = evaluate(self.model, self.token_loss, self.eval_data, self.collator, self.dp, self.device,
                          batch_size=self.args.micro_batch_size, show_progress=self.is_main)
        self.last_eval = (self.progress.global_step, values)
        self.reporter.metrics.log(self.progress.global_step, values)
        logger.info("eval at step %d: %s", self.progress.global_step,
                    ", ".join(f"{k}={v:.4f}" for k, v in values.items()))

    def _save(self) -> None:
        progress = self.progress
        if not self.args.no_save:
            self.last_checkpoint = ckpt.save_checkpoint(self.booster, self.model, self.optimizer, self.lr_scheduler,
                                 save_dir=self.args.save_dir, epoch=progress.epoch, global_step=progress.global_step,
                                 running_states=progress.running_states(self.sampler), tokenizer=self.tokenizer,
                                 keep_last=self.args.keep_last, write_card=self._write_card)
        progress.last_saved = progress.global_step

    def _write_card(self, modeling: Path) -> None:
        """The saved model's card: where it comes from, the data, the arguments, the last losses."""
        args, step = self.args, self.progress.global_step
        if self._categories is None:  # read once, at the first save
            self._categories = Counter(self.data.dataset["category"])
        what = "SFT" if "sft" in self.data.kinds else "continual pre-training"
        results = []
        if self.reporter.last_loss:
            results.append("training loss {1:.4f} at step {0}".format(*self.reporter.last_loss))
        if self.last_eval:
            results += [f"{name} {value:.4f} at step {self.last_eval[0]}" for name, value in self.last_eval[1].items()]
        data = [f"{', '.join(map(str, args.dataset))}: {len(self.data)} samples of up to {self.data.max_length} tokens",
                *(f"category {name}: {n} samples" for name, n in sorted(self._categories.items()))]
        write_card(modeling, base_model=base_model_of(args.pretrained), language=language_of(args.pretrained),
                   title=f"{Path(args.save_dir).name}: {what}, step {step}", sections={
                       "Training": [f"from {args.pretrained}", f"{step} optimizer steps, epoch {self.progress.epoch}",
                                    f"world size {self.world_size}, plugin {args.plugin}, precision {self.precision}"],
                       "Data": data, "Arguments": arguments_lines(vars(args), CARD_ARGUMENTS), "Results": results})

    def _finish(self) -> None:
        """The last evaluation (unless a stop or the schedule just did it) and the last save."""
        step = self.progress.global_step
        if self.stopped_by:
            cause = f"{self.stopped_by} received" if self.stopped_by.startswith("SIG") else self.stopped_by
            logger.warning("%s: saving a checkpoint at step %d and stopping", cause, step)
        elif not self.args.eval_interval or step % self.args.eval_interval:
            self._evaluate()
        if self.progress.last_saved != step:
            self._save()

    def _reap_dead_launcher(self) -> None:
        """The run ended by itself, but `colossalai run` was killed meanwhile (its child would wait forever)."""
        watch = self.stopper.watch
        reason = watch.check() if watch is not None and watch.ancestors else None
        if reason and os.environ.get("LOCAL_RANK", "0") == "0":
            logger.warning("%s before the run ended: ending what is left of it once torchrun exits", reason)
            spawn_reaper(watch.parent, watch.ancestors)

    def _report_stop(self) -> None:
        """Say where the run stopped and how to continue; leave a reaper for a launcher that cannot exit."""
        step, where = self.progress.global_step, self.last_checkpoint
        resume = f"resume with --load_checkpoint {where} (or --load_checkpoint latest)" if where else "nothing saved"
        logger.warning("stopped by %s at step %d; %s", self.stopped_by, step, resume)
        self.reporter.metrics.log(step, {"stopped_by": self.stopped_by, "checkpoint": str(where) if where else None})
        watch = self.stopper.watch
        if watch is not None and watch.ancestors and os.environ.get("LOCAL_RANK", "0") == "0":
            spawn_reaper(watch.parent, watch.ancestors)
