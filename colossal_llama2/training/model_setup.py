"""The model: how it is built, and every change made to transformers' LLaMA, decided in one place.

``plan_model_patches`` turns the flags, the plugin and the machine into a ``ModelPatches`` record that says
which patches are on and why; it is logged once at start. ``build_model`` applies the ones that must exist
before the optimizer (gradient checkpointing, freezing); ``apply_patches_after_boost`` the ones that act on
the boosted model (fused RMSNorm or liger-kernel's kernels, the fused linear loss, per-layer compile,
NEFTune, ddp's bf16 residual stream), so the plugins' own wrappers and hooks stay outside of them. A new
patch gets a field here, a line in ``describe`` and its application in one of the two functions.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch

from ..dataset.schema import IGNORE_INDEX
from ..utils.logging import get_logger
from .attention import choose_attn_implementation
from .plugins.ddp_speed import bf16_residual_stream
from .kernels.liger import apply_liger_kernels, enable_linear_loss
from .kernels.fp8 import apply_float8
from .freeze import freeze_non_embedding_params
from .kernels.fused_ops import Fusion, fuse_rms_norms
from .neftune import NEFTune
from .plugins.factory import LAZY_INIT_PLUGINS

logger = get_logger(__name__)

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


@dataclass(frozen=True)
class ModelPatches:
    attn_implementation: str      # transformers attention backend the model is built with
    isolate_documents: bool       # packed documents attend only to themselves
    fusion: Fusion                # fused RMSNorm / fused cross-entropy
    compile_layers: bool          # torch.compile per decoder layer
    fp8: str                      # off, or the torchao Float8Linear recipe: tensorwise, rowwise
    grad_checkpoint: bool
    freeze_non_embeddings: bool
    neftune_alpha: float | None   # None: NEFTune off
    bf16_autocast: bool           # ddp on CUDA in bf16: autocast around the forward (the Booster has none)
    bf16_residual_stream: bool    # with it and the fused norm: activations stay bf16 (weights fp32)
    lazy_init: bool               # built under LazyInitContext, materialised sharded by the plugin

    def describe(self) -> str:
        parts = [f"attention {self.attn_implementation}",
                 "packed documents " + ("isolated" if self.isolate_documents else "NOT isolated"),
                 self.fusion.describe()]
        for on, text in ((self.fp8 != "off", f"fp8 linears ({self.fp8})"),
                         (self.compile_layers, "decoder layers compiled"),
                         (self.grad_checkpoint, "gradient checkpointing"),
                         (self.freeze_non_embeddings, "only embeddings trained"),
                         (self.neftune_alpha is not None, f"NEFTune alpha {self.neftune_alpha}"),
                         (self.bf16_autocast, "bf16 autocast"),
                         (self.bf16_residual_stream, "bf16 residual stream")):
            if on:
                parts.append(text)
        return ", ".join(parts)


def plan_model_patches(args: argparse.Namespace, fusion: Fusion, precision: str, cuda: bool) -> ModelPatches:
    """Which patches this run applies, from the flags, the plugin and the machine."""
    # ddp on GPU: fp16 goes through the Booster's torch AMP (autocast + GradScaler); bf16 needs no scaler,
    # only autocast, which the Booster does not offer for it.
    bf16_autocast = args.plugin == "ddp" and cuda and precision == "bf16"
    return ModelPatches(
        attn_implementation=choose_attn_implementation(args.use_flash_attn, cuda, args.attention, args.plugin),
        # 3d too: shardformer's LlamaModel forward (no flash attention, no sequence parallelism) takes a 4-D
        # mask as given, and the attention modules stay transformers' SDPA ones (tests/test_train_gpu.py)
        isolate_documents=True,
        fusion=fusion,
        compile_layers=args.compile,
        fp8=args.fp8,
        grad_checkpoint=args.use_grad_checkpoint,
        freeze_non_embeddings=args.freeze_non_embeds_params,
        neftune_alpha=args.neft_alpha if args.use_neft else None,
        bf16_autocast=bf16_autocast,
        bf16_residual_stream=bf16_autocast and fusion.norm,
        lazy_init=args.plugin in LAZY_INIT_PLUGINS,
    )


def build_model(args: argparse.Namespace, config, patches: ModelPatches, device: torch.device) -> torch.nn.Module:
    """The fp32 model before boosting: lazily (sharded later by the plugin), randomly, or from --pretrained."""
    from colossalai.lazy import LazyInitContext
    from transformers import AutoModelForCausalLM

    attn = patches.attn_implementation
    if patches.lazy_init:
        with LazyInitContext(default_device=device):
            model = AutoModelForCausalLM.from_config(config, attn_implementation=attn, torch_dtype=torch.float32)
        rebuild_rotary_buffers(model, device)
    elif args.random_init:
        torch.manual_seed(args.seed)  # identical on every rank
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config, attn_implementation=attn, torch_dtype=torch.float32)
    else:
        model = AutoModelForCausalLM.from_pretrained(args.pretrained, attn_implementation=attn, trust_remote_code=False,
                                                     torch_dtype=torch.float32)
    if patches.grad_checkpoint:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if patches.freeze_non_embeddings:
        trainable, frozen = freeze_non_embedding_params(model)
        logger.info("--freeze_non_embeds_params: %d trainable, %d frozen parameters", trainable, frozen)
    return model


def rebuild_rotary_buffers(model: torch.nn.Module, device: torch.device) -> None:
    """Replace the rotary embeddings' lazy buffers by eagerly computed ones. transformers 5 initialises
    ``inv_freq`` and ``original_inv_freq`` by copying into each other, a chain colossalai's LazyInitContext replays
    without end (RecursionError when the plugin materialises the model); they are a few hundred floats, computed
    from the config as the rotary module's own constructor does."""
    for module in model.modules():
        if "RotaryEmbedding" not in type(module).__name__ or not hasattr(module, "config"):
            continue
        with torch.device(device):
            fresh = type(module)(config=module.config)
        for name, value in fresh.named_buffers(recurse=False):
            module.register_buffer(name, value, persistent=name not in fresh._non_persistent_buffers_set)


def stop_generation_at(model: torch.nn.Module, tokenizer, end_tokens: list[str]) -> list[int]:
    """Add SFT data's end-of-turn tokens to ``generation_config.eos_token_id`` (saved in every ``modeling/``), so
    that ``generate`` stops where the answers it learnt end (LLaMA-3's ``<|eot_id|>``, not only
    ``<|end_of_text|>``); returns the stop ids."""
    eos = model.generation_config.eos_token_id
    stops = [] if eos is None else list(eos) if isinstance(eos, (list, tuple)) else [eos]
    if tokenizer.eos_token_id is not None:
        stops.append(tokenizer.eos_token_id)
    stops += [tokenizer.convert_tokens_to_ids(token) for token in end_tokens]
    stops = list(dict.fromkeys(stops))
    model.generation_config.eos_token_id = stops[0] if len(stops) == 1 else stops
    return stops


def apply_patches_after_boost(unwrapped: torch.nn.Module, patches: ModelPatches) -> NEFTune | None:
    """Patch the boosted model's modules in place; returns the NEFTune hook (it needs each batch's lengths)."""
    if patches.fusion.liger:
        logger.info("liger-kernel: %d RMSNorm/SwiGLU modules and the rotary embedding patched",
                    apply_liger_kernels(unwrapped))
    elif patches.fusion.norm:
        logger.info("fused RMSNorm: %d modules run as F.rms_norm", fuse_rms_norms(unwrapped))
    if patches.fusion.linear_loss:
        enable_linear_loss(unwrapped, ignore_index=IGNORE_INDEX)
    if patches.fp8 != "off":
        # after the kernel patches (liger's MLP calls its projections as modules: they get swapped too), before
        # compiling, so that the casts to fp8 fuse into each layer's graph
        logger.info("--fp8 %s: %d decoder linears run as torchao Float8Linear%s", patches.fp8,
                    apply_float8(unwrapped, patches.fp8),
                    "" if patches.compile_layers else " (eager: without --compile its casts cost more than it saves)")
    if patches.compile_layers:
        # Per decoder layer, after boosting: the plugin's wrappers and hooks stay outside the compiled code.
        for layer in unwrapped.model.layers:
            layer.compile()
        logger.info("--compile: %d decoder layers compiled with torch.compile", len(unwrapped.model.layers))
    neft = None
    if patches.neftune_alpha is not None:
        neft = NEFTune(unwrapped.get_input_embeddings(), patches.neftune_alpha)
    if patches.bf16_residual_stream:
        bf16_residual_stream(unwrapped)  # after NEFTune's hook: noise is added in fp32, then cast
    return neft
