"""The head-sharding policy (colossal_llama2/training/plugins/tensor_parallel.py) against the unsharded model, on
gloo ranks (CPU): for each family named, the loss and every parameter's gradient of the sharded model equal the
unsharded model's (a sharded parameter's: its slice). Prints one ``RESULT {json}`` line per family on rank 0.

    torchrun --nproc_per_node 2 tests/scripts/tensor_parallel_equivalence.py FAMILY...
"""
from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist


def compare(family: str) -> dict:
    from colossalai.shardformer import ShardConfig, ShardFormer
    from transformers import AutoConfig, AutoModelForCausalLM

    from colossal_llama2.tiny_base import TINY_FAMILIES
    from colossal_llama2.training.plugins.tensor_parallel import head_sharding_policy

    model_type, settings = TINY_FAMILIES[family]
    config = AutoConfig.for_model(model_type, vocab_size=302, hidden_size=64, intermediate_size=192,
                                  num_hidden_layers=2, num_attention_heads=8, max_position_embeddings=256,
                                  bos_token_id=1, eos_token_id=2, pad_token_id=None, **settings)
    torch.manual_seed(0)
    reference = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa", torch_dtype=torch.float32)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa", torch_dtype=torch.float32)
    model.load_state_dict(reference.state_dict())
    shard_config = ShardConfig(tensor_parallel_process_group=dist.group.WORLD, enable_tensor_parallelism=True,
                               make_vocab_size_divisible_by=1)  # as the 3d plugin is made (plugins/factory.py)
    sharded, _ = ShardFormer(shard_config).optimize(model, policy=head_sharding_policy())
    ids = torch.randint(3, 302, (2, 24), generator=torch.Generator().manual_seed(1))
    losses = []
    for m in (reference, sharded):
        loss = m(input_ids=ids, labels=ids).loss
        loss.backward()
        losses.append(loss.item())
    rank, world = dist.get_rank(), dist.get_world_size()
    worst, sharded_names = 0.0, []
    grads = dict(reference.named_parameters())
    for name, param in sharded.named_parameters():
        full = grads[name].grad
        if param.shape != full.shape:  # split by output rows (column-parallel) or input columns (row-parallel)
            dim = next(d for d in range(full.dim()) if param.shape[d] != full.shape[d])
            full = full.chunk(world, dim=dim)[rank]
            sharded_names.append(name)
        worst = max(worst, ((param.grad - full).abs().max() / (full.abs().max() + 1e-12)).item())
    q_proj = sharded.model.layers[0].self_attn.q_proj.weight
    return {"family": family, "loss": losses[1], "reference_loss": losses[0], "worst_grad_error": worst,
            "sharded": len(sharded_names), "q_proj_shape": list(q_proj.shape),
            "embedding_rows": sharded.get_input_embeddings().weight.shape[0],
            "lm_head_rows": sharded.get_output_embeddings().weight.shape[0],
            "tied": sharded.get_input_embeddings().weight is sharded.get_output_embeddings().weight}


def main(families: list[str]) -> None:
    from tests.helpers.cpu_accelerator import patch_rng_calls

    patch_rng_calls()
    dist.init_process_group("gloo")
    for family in families:
        result = compare(family)
        if dist.get_rank() == 0:
            print("RESULT " + json.dumps(result), flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])
