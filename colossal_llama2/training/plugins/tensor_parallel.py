"""Tensor parallelism for ``--plugin 3d`` where colossalai's own shardformer policies do not import (transformers 5).

colossalai 0.5.0's per-family policies replace transformers 4's model forwards and import its internals; under
transformers 5 they fail to import. This policy shards only what tensor parallelism needs and leaves every forward
as transformers wrote it: in each decoder layer, q/k/v and the MLP's gate/up projections become column-parallel
linears (each rank holds whole heads and a slice of the MLP's width) and o/down become row-parallel ones (their
partial outputs summed over the tensor-parallel group). transformers' attention reshapes with ``-1`` heads and
repeats key/value heads by the unchanged ratio, so a rank's share of the heads needs no attribute changed.
The embedding and the lm_head are split by vocabulary rows, as colossalai's own policies split them (each rank
looks up or scores its share of the vocabulary; the embedding's rows are summed and the logits gathered over the
group): at a 128k vocabulary they are a billion parameters per rank that the ranks no longer all hold. A tied pair
stays tied (both layers share the one split parameter). A family whose embedding is not a plain ``nn.Embedding``
(Gemma-3's scales its output) keeps both whole on every rank. Norms stay whole: their inputs are the whole hidden
states, the same on each rank, and so are their gradients. Parameters inside the attention besides the projections (Qwen3's and
Gemma-3's per-head q/k norms) are shared by all heads while each rank runs only its own: their gradients are
partial sums, added up over the tensor-parallel group by a hook as backward computes them.

Only head-local attention can be sharded this way: a parameter inside the attention that spans all heads (OLMo-3's
q/k norms over the whole projection) would normalise a shard by the shard's statistics, a different model.
``check_shardable`` refuses such a model in one line, before any rank starts.
"""
from __future__ import annotations

import functools

import torch
import torch.distributed as dist

from ...utils.errors import UserInputError

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")
COLUMN_PARALLEL = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "mlp.gate_proj", "mlp.up_proj")
ROW_PARALLEL = ("self_attn.o_proj", "mlp.down_proj")


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    layers = getattr(getattr(model, "model", None), "layers", None)
    if not isinstance(layers, torch.nn.ModuleList) or not len(layers):
        raise UserInputError(f"{type(model).__name__} has no model.layers of decoder layers to shard", where="--tp")
    return layers


def vocabulary_not_divisible(vocab_size: int, tp: int) -> UserInputError:
    # shardformer would pad the split vocabulary itself, and colossalai 0.5.0 then fails to save the padded
    # parameter (`_unpad_detach`); a model grown to a multiple by init_model avoids both.
    return UserInputError(f"--tp {tp} does not divide the model's vocabulary of {vocab_size} rows; grow the model "
                          f"with `init_model.py --pad_to_multiple_of {tp * 32}` first", where="--tp")


def check_shardable(model: torch.nn.Module, tp: int) -> None:
    """Raise UserInputError (``--tp``) unless every decoder layer has the projections this policy shards, their
    widths divide by ``tp``, nothing else in the attention spans several heads and a vocabulary to be split
    divides by ``tp``."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    for index, layer in enumerate(decoder_layers(model)):
        modules = dict(layer.named_modules())
        for name in (*COLUMN_PARALLEL, *ROW_PARALLEL):
            if not isinstance(modules.get(name), torch.nn.Linear):
                raise UserInputError(f"{config.model_type}: decoder layer {index} has no linear {name}; tensor "
                                     "parallelism shards LLaMA-style attention and MLP projections only", where="--tp")
        if modules["mlp.gate_proj"].out_features % tp:
            raise UserInputError(f"--tp {tp} does not divide the MLP width {modules['mlp.gate_proj'].out_features}",
                                 where="--tp")
        spanning = {heads * head_dim, kv_heads * head_dim} - {head_dim}
        for name, param in modules["self_attn"].named_parameters():
            if name.split(".")[0] not in PROJECTIONS and spanning & set(param.shape):
                raise UserInputError(
                    f"{config.model_type}: self_attn.{name} {tuple(param.shape)} spans all attention heads, so a "
                    "rank holding some heads cannot compute it; train this family without tensor parallelism "
                    "(--tp 1, or --plugin zero2)", where="--tp")
    vocab_size = model.get_input_embeddings().num_embeddings
    if splits_vocabulary(model) and vocab_size % tp:
        raise vocabulary_not_divisible(vocab_size, tp)


def splits_vocabulary(model: torch.nn.Module) -> bool:
    """Whether the policy splits the embedding and lm_head by vocabulary rows: the embedding is a plain lookup and
    the lm_head a plain linear layer (a tied lm_head can only be split with its embedding)."""
    embedding = model.get_input_embeddings()
    return type(embedding) is torch.nn.Embedding and type(model.get_output_embeddings()) is torch.nn.Linear


def check_config_shardable(config, tp: int) -> None:
    """``check_shardable`` on the model ``config`` describes, built on the meta device (no memory)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    check_shardable(model, tp)


def head_shared_params(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The attention's parameters other than its projections: used by every head, so by every rank's share."""
    return [param for layer in decoder_layers(model) for name, param in layer.self_attn.named_parameters()
            if name.split(".")[0] not in PROJECTIONS]


def _summed_over(grad: torch.Tensor, group) -> torch.Tensor:
    grad = grad.clone()
    dist.all_reduce(grad, group=group)
    return grad


def head_sharding_policy():
    """The shardformer policy (an instance, for ``HybridParallelPlugin(custom_policy=...)``)."""
    from colossalai.shardformer.layer import (Linear1D_Col, Linear1D_Row, VocabParallelEmbedding1D,
                                              VocabParallelLMHead1D)
    from colossalai.shardformer.policies.base_policy import (ModulePolicyDescription, Policy,
                                                             SubModuleReplacementDescription)

    class HeadShardingPolicy(Policy):
        def config_sanity_check(self) -> None:
            if self.shard_config.pipeline_stage_manager is not None:
                raise UserInputError("pipeline parallelism is not supported under transformers 5", where="--plugin")

        def preprocess(self) -> torch.nn.Module:
            return self.model

        def postprocess(self) -> torch.nn.Module:
            if self.shard_config.enable_tensor_parallelism:
                group = self.shard_config.tensor_parallel_process_group
                for param in head_shared_params(self.model):
                    param.register_hook(functools.partial(_summed_over, group=group))
            return self.model

        def module_policy(self) -> dict:
            if not self.shard_config.enable_tensor_parallelism:
                return {}
            check_shardable(self.model, self.shard_config.tensor_parallel_size)
            layer_type = type(decoder_layers(self.model)[0])
            replacements = [SubModuleReplacementDescription(suffix=name, target_module=Linear1D_Col)
                            for name in COLUMN_PARALLEL]
            replacements += [SubModuleReplacementDescription(suffix=name, target_module=Linear1D_Row)
                             for name in ROW_PARALLEL]
            policy = {layer_type: ModulePolicyDescription(sub_module_replacement=replacements)}
            if splits_vocabulary(self.model):
                vocab = {"make_vocab_size_divisible_by": self.shard_config.make_vocab_size_divisible_by}
                policy[type(self.model.model)] = ModulePolicyDescription(sub_module_replacement=[
                    SubModuleReplacementDescription(suffix="embed_tokens", target_module=VocabParallelEmbedding1D,
                                                    kwargs=vocab)])
                policy[type(self.model)] = ModulePolicyDescription(sub_module_replacement=[
                    SubModuleReplacementDescription(suffix="lm_head", target_module=VocabParallelLMHead1D,
                                                    kwargs={**vocab, "gather_output": True})])
            return policy

    return HeadShardingPolicy()
