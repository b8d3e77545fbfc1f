"""Tensor parallelism by the head-sharding policy (``--plugin 3d`` where colossalai's own policies do not import):
the sharded model computes the unsharded model's loss and gradients, on CPU ranks; what it cannot shard is refused
in one line. Training, saving and exact resume with it: tests/test_families.py."""
from __future__ import annotations

import json

import pytest
import torch

from colossal_llama2.tiny_base import TINY_FAMILIES, family_known
from colossal_llama2.training.plugins.tensor_parallel import check_config_shardable, head_shared_params
from colossal_llama2.utils.errors import UserInputError
from tests.helpers.distributed import REPO_ROOT, run_distributed

SHARDABLE = ["llama3", "qwen2", "qwen3", "mistral", "gemma3", "smollm3"]


def tiny_config(family: str, **overrides):
    from transformers import AutoConfig

    model_type, settings = TINY_FAMILIES[family]
    shape = dict(vocab_size=302, hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=8,
                 pad_token_id=None)
    return AutoConfig.for_model(model_type, **{**shape, **settings, **overrides})


def test_each_family_shards_to_the_unsharded_loss_and_gradients():
    families = [f for f in SHARDABLE if family_known(f)]
    proc = run_distributed(REPO_ROOT / "tests" / "scripts" / "tensor_parallel_equivalence.py", families, nproc=2,
                           timeout=300)
    results = {r["family"]: r for r in (json.loads(line.split("RESULT ", 1)[1])
                                        for line in proc.stdout.splitlines() if line.startswith("RESULT "))}
    assert sorted(results) == sorted(families)
    for family, result in results.items():
        assert result["loss"] == pytest.approx(result["reference_loss"], rel=1e-5), result
        # every gradient, q/k norms' included (partial on each rank until the hook sums them)
        assert result["worst_grad_error"] < 1e-4, result
        biases = 3 if family == "qwen2" else 0  # Qwen2's q/k/v biases split with their rows
        tied = TINY_FAMILIES[family][1]["tie_word_embeddings"]
        # the vocabulary split in two: embedding and lm_head, or the one tied parameter; Gemma-3's scaled embedding
        # (and so its tied lm_head) stay whole
        vocabulary = 0 if family == "gemma3" else 1 if tied else 2
        assert result["sharded"] == 2 * (7 + biases) + vocabulary, result  # and the 7 projections of 2 layers
        rows = 302 if family == "gemma3" else 151
        assert (result["embedding_rows"], result["lm_head_rows"], result["tied"]) == (rows, rows, tied), result
        head_dim = TINY_FAMILIES[family][1].get("head_dim", 8)
        assert result["q_proj_shape"] == [8 * head_dim // 2, 64], result


def test_what_cannot_be_split_by_heads_is_refused_in_one_line():
    for family in SHARDABLE:
        if family_known(family):
            check_config_shardable(tiny_config(family), 2)
    with pytest.raises(UserInputError, match=r"--tp 2 does not divide the model's vocabulary of 301 rows"):
        check_config_shardable(tiny_config("llama3", vocab_size=301), 2)
    check_config_shardable(tiny_config("gemma3", vocab_size=301), 2)  # its vocabulary is not split
    with pytest.raises(UserInputError, match=r"--tp 4 does not divide the MLP width 190"):
        check_config_shardable(tiny_config("llama3", intermediate_size=190, vocab_size=304), 4)
    from transformers import GPT2Config

    with pytest.raises(UserInputError, match="GPT2LMHeadModel has no model.layers"):
        check_config_shardable(GPT2Config(n_layer=1, n_embd=32, n_head=4), 2)
    if family_known("olmo3"):  # q/k norms over the whole projection
        with pytest.raises(UserInputError, match=r"olmo3: self_attn.q_norm.weight \(64,\) spans all attention heads"):
            check_config_shardable(tiny_config("olmo3"), 2)


def test_only_the_attentions_head_shared_parameters_get_summed():
    from transformers import AutoModelForCausalLM

    if not family_known("qwen3"):
        pytest.skip("qwen3 needs transformers >= 4.51")
    with torch.device("meta"):
        qwen3 = AutoModelForCausalLM.from_config(tiny_config("qwen3"))
        llama = AutoModelForCausalLM.from_config(tiny_config("llama3"))
    names = {id(p): n for n, p in qwen3.named_parameters()}
    assert sorted(names[id(p)] for p in head_shared_params(qwen3)) == [
        f"model.layers.{i}.self_attn.{n}_norm.weight" for i in (0, 1) for n in ("k", "q")]
    assert head_shared_params(llama) == []
