"""Booster plugin factory: maps --plugin to a Colossal-AI plugin, and refuses combinations that cannot work."""
from __future__ import annotations

import importlib
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ...utils.errors import UserInputError
from ...utils.logging import get_logger
from .tensor_parallel import head_sharding_policy, vocabulary_not_divisible

logger = get_logger(__name__)

GPU_PLUGINS = ("gemini", "gemini_auto", "zero2", "zero2_cpu", "3d")
# Plugins whose models can be built lazily (LazyInitContext) and materialised already sharded.
LAZY_INIT_PLUGINS = ("gemini", "gemini_auto", "3d")


def check_plugin_args(plugin: str, *, cuda: bool, world_size: int, tp: int, num_heads: int, num_kv_heads: int,
                      mixed_precision: str | None, vocab_size: int | None = None) -> None:
    """Raise UserInputError for a plugin that cannot run here or a --tp that does not fit. ``vocab_size``: the
    vocabulary colossalai's policy splits (None where ``tensor_parallel.py``'s policy shards the model)."""
    if tp < 1:
        raise UserInputError("must be >= 1", where="--tp")
    if tp > 1 and plugin != "3d":
        raise UserInputError(f"tensor parallelism (--tp {tp}) needs --plugin 3d", where="--tp")
    if num_heads % tp or num_kv_heads % tp:
        raise UserInputError(f"--tp {tp} does not divide the model's {num_heads} attention heads / "
                             f"{num_kv_heads} key-value heads", where="--tp")
    if world_size % tp:
        raise UserInputError(f"--tp {tp} does not divide the world size {world_size}", where="--tp")
    if vocab_size is not None and vocab_size % tp:
        # colossalai's policies split the embedding and lm_head by vocabulary rows (tensor_parallel.py's policy
        # checks its own, in check_shardable, before this)
        raise vocabulary_not_divisible(vocab_size, tp)
    if plugin in GPU_PLUGINS and not cuda:
        raise UserInputError(f"plugin {plugin!r} needs CUDA GPUs and none is available; use --plugin ddp on CPU",
                             where="--plugin")


def shardformer_imports() -> bool:
    """Whether colossalai 0.5.0's own shardformer policies import: they import transformers 4 internals
    (StaticCache from modeling_llama, among others) that transformers 5 removed; there ``tensor_parallel.py``'s
    policy shards the model instead."""
    try:
        importlib.import_module("colossalai.shardformer.policies.llama")
    except ImportError:
        return False
    return True


def colossalai_has_policy(config) -> bool:
    """Whether colossalai's shardformer has a policy of its own for the causal-LM class ``config`` describes: only
    where its policies import (transformers 4), and only for the families it knows (not Gemma-3, for one). Elsewhere
    ``tensor_parallel.py``'s policy shards the model."""
    if not shardformer_imports():
        return False
    from colossalai.shardformer.policies.auto_policy import _POLICY_LIST
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    try:
        model_class = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
    except KeyError:
        return False
    return f"{model_class.__module__}.{model_class.__qualname__}" in _POLICY_LIST


def precision_for(plugin: str, mixed_precision: str | None, cuda: bool, bf16_supported: bool | None = None) -> str:
    """--mixed_precision, else bf16 on GPUs that have it (no loss scaling, fp32's range) and fp16 on older
    ones; fp32 for ddp on CPU (CPU autocast/fp16 training is neither fast nor exact)."""
    if plugin == "ddp" and not cuda:
        return "fp32"
    if mixed_precision:
        return mixed_precision
    if bf16_supported is None:
        bf16_supported = cuda and torch.cuda.is_bf16_supported(including_emulation=False)
    return "bf16" if bf16_supported else "fp16"


def make_plugin(plugin: str, *, precision: str, max_norm: float, tp: int, zero: int, accumulation_steps: int,
                reduce_bucket_size_in_m: int = 12, master_weights: bool = True, colossalai_policy: bool = True):
    """Build the Colossal-AI plugin. Gradient clipping is done by the plugin where it owns the gradients.
    ``master_weights`` False (zero2, the low-memory optimizers): the optimizer updates the bf16 shards itself.
    ``colossalai_policy`` (3d): colossalai has a shardformer policy for the model (``colossalai_has_policy``)."""
    from colossalai.booster.plugin import GeminiPlugin, HybridParallelPlugin, LowLevelZeroPlugin, TorchDDPPlugin

    if plugin == "ddp":
        # Gradients live in DDP's buckets instead of being copied into them; the only buffer (rotary's
        # inv_freq) is identical on every rank, so broadcasting it before every forward is wasted work.
        # find_unused_parameters keeps the buckets DDP starts with: otherwise it rebuilds them after a run's first
        # step in the order gradients became ready, so a resumed run's first step sums the ranks' gradients in
        # another order than the uninterrupted run did (with more than two ranks the sums then differ in the last
        # bit; seen under transformers 5, whose gradients become ready out of registration order). The price is
        # one walk over the autograd graph per step.
        return TorchDDPPlugin(gradient_as_bucket_view=True, broadcast_buffers=False, find_unused_parameters=True)
    if plugin in ("gemini", "gemini_auto"):
        return GeminiPlugin(placement_policy="auto" if plugin == "gemini_auto" else "static", precision=precision,
                            initial_scale=2**16, max_norm=max_norm,
                            enable_gradient_accumulation=accumulation_steps > 1)
    if plugin in ("zero2", "zero2_cpu"):
        return LowLevelZeroPlugin(stage=2, precision=precision, initial_scale=2**16, max_norm=max_norm,
                                  cpu_offload=plugin == "zero2_cpu", reduce_bucket_size_in_m=reduce_bucket_size_in_m,
                                  master_weights=master_weights)
    if plugin == "3d":
        # shardformer pads a split vocabulary to a multiple of make_vocab_size_divisible_by * tp: with 1, never
        # (check_plugin_args and check_shardable refuse a vocabulary that tp does not divide).
        # colossalai's own per-family policies where it has one for the model, ours elsewhere.
        logger.info("3d: tensor parallelism by %s", "colossalai's shardformer policy for the model"
                    if colossalai_policy else "the head-sharding policy (training/plugins/tensor_parallel.py)")
        return HybridParallelPlugin(tp_size=tp, pp_size=1, zero_stage=zero, precision=precision,
                                    initial_scale=2**16, max_norm=max_norm, make_vocab_size_divisible_by=1,
                                    custom_policy=None if colossalai_policy else head_sharding_policy())
    raise UserInputError(f"unknown plugin {plugin!r}", where="--plugin")


@dataclass(frozen=True)
class DataParallel:
    """This rank's place among the data-parallel replicas (TP ranks of one replica see the same data)."""
    size: int
    rank: int
    group: object = None  # None: the whole world

    def all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        """Sum ``t`` over the replicas in place (asynchronous on CUDA: no host wait); returns it."""
        dist.all_reduce(t, group=self.group)
        return t


def data_parallel(plugin, plugin_name: str) -> DataParallel:
    if plugin_name == "3d":
        return DataParallel(plugin.dp_size, dist.get_rank(plugin.dp_group), plugin.dp_group)
    return DataParallel(dist.get_world_size(), dist.get_rank())


def make_booster(plugin_name: str, plugin, precision: str, cuda: bool):
    """The Booster; ddp on GPU in fp16 gets torch AMP from it (bf16 runs under autocast, see model_setup)."""
    from colossalai.booster import Booster

    return Booster(plugin=plugin, mixed_precision="fp16" if (plugin_name == "ddp" and cuda and
                                                            precision == "fp16") else None)
