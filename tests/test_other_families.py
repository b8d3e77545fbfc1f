"""Families with no entry of their own in the toolkit train with transformers' own modules: a mixture of experts
(Qwen3-MoE), multi-head latent attention with experts (DeepSeek-V3) and a hybrid of convolutions and attention
(LFM2, transformers 5 only). Each tiny model is grown (stage 2), trained two steps with ``train.py`` (ddp), saved,
and loads with plain ``from_pretrained``: every parameter trained, the grown vocabulary kept, ``generate`` runs;
the planner's parameter count is exact.
"""
from __future__ import annotations

import json

import pytest

from tests.helpers.distributed import REPO_ROOT, run_distributed
from tests.test_prepare_pretrain import options, write_jsonl

MOE = dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32)
FAMILIES = {  # model type: its settings beside the shared tiny shape
    "qwen3_moe": dict(MOE, num_key_value_heads=4, head_dim=8),
    "deepseek_v3": dict(n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, first_k_dense_replace=1,
                        n_group=1, topk_group=1, num_key_value_heads=8, q_lora_rank=32, kv_lora_rank=16,
                        qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=8),
    "lfm2": dict(num_key_value_heads=4, layer_types=["conv", "full_attention"]),
}


@pytest.fixture(scope="module")
def grown_tokenizer_and_data(tmp_path_factory, tiny_tokenizer_dir):
    from colossal_llama2.dataset.prepare import prepare
    from colossal_llama2.tokenizer.init_tokenizer import extend_tokenizer

    tmp = tmp_path_factory.mktemp("other_families")
    pieces = write_jsonl(tmp / "pieces.jsonl", [{"piece": p} for p in ("冬天", "夏天很热")])
    extend_tokenizer(tiny_tokenizer_dir, tmp / "tok", expand_tokens_file=str(pieces))
    corpus = write_jsonl(tmp / "in" / "docs.jsonl", [{"source": "", "target": f"冬天很冷, 夏天很热. Day {i}.",
                                                       "category": "zh"} for i in range(64)])
    prepare(options(tmp, tmp / "tok", corpus.parent, max_length=64, num_spliced_dataset_bins=1))
    return tmp / "tok", tmp / "arrow"


def _tiny_model(model_type: str, tokenizer_dir, out_dir):
    import shutil

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    config = AutoConfig.for_model(model_type, vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                                  num_hidden_layers=2, num_attention_heads=8, max_position_embeddings=256,
                                  bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                  pad_token_id=None, tie_word_embeddings=False, **FAMILIES[model_type])
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(str(out_dir))
    for path in tokenizer_dir.iterdir():
        shutil.copy2(path, out_dir / path.name)
    return out_dir


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_a_family_without_an_entry_grows_trains_and_loads(tmp_path, tiny_tokenizer_dir, grown_tokenizer_and_data,
                                                          model_type):
    import torch
    from transformers import CONFIG_MAPPING, AutoModelForCausalLM, AutoTokenizer

    from colossal_llama2.model.init_model import init_model
    from colossal_llama2.training.plugins.choice import ModelShape

    if model_type not in CONFIG_MAPPING:
        pytest.skip(f"{model_type} needs the transformers 5 stack (make install TRANSFORMERS=5)")
    grown_tokenizer, data = grown_tokenizer_and_data
    base = _tiny_model(model_type, tiny_tokenizer_dir, tmp_path / "base")
    init_model(base, grown_tokenizer, tmp_path / "model")
    run_distributed(REPO_ROOT / "train.py", [
        "--pretrained", tmp_path / "model", "--dataset", data, "--plugin", "ddp", "--max_length", 64,
        "--micro_batch_size", 2, "--max_steps", 2, "--warmup_steps", 0, "--save_dir", tmp_path / "ckpt"],
        nproc=1, timeout=300)

    (final,) = sorted((tmp_path / "ckpt").glob("epoch-*_step-*"))
    trained = AutoModelForCausalLM.from_pretrained(final / "modeling")
    grown = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    tokenizer = AutoTokenizer.from_pretrained(final / "modeling")
    assert trained.config.vocab_size == len(tokenizer) == grown.config.vocab_size
    assert ModelShape.of(grown.config).params == grown.num_parameters()  # what the planner sizes
    grown_params = dict(grown.named_parameters())
    unchanged = [n for n, p in trained.named_parameters() if torch.equal(p, grown_params[n])]
    assert not unchanged, unchanged
    prompt = tokenizer("冬天", return_tensors="pt")
    out = trained.generate(**prompt, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert out.shape[1] == prompt.input_ids.shape[1] + 3
    assert json.loads((final / "modeling" / "config.json").read_text())["model_type"] == model_type
