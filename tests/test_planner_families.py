"""The planner's parameter counts for every family: the model built on the meta device, checked against the counts
the model makers publish for their real configurations, and against the tiny models the tests train."""
from __future__ import annotations

import pytest

from colossal_llama2.tiny_base import TINY_FAMILIES, family_known
from colossal_llama2.training.plugins.choice import ModelShape

# (model type, the published model's config values that shape it, its published parameter count)
PUBLISHED = {
    "LLaMA-2-7B": ("llama", dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                                 num_attention_heads=32, num_key_value_heads=32, tie_word_embeddings=False),
                   6_738_415_616),
    "Mistral-7B-v0.1": ("mistral", dict(vocab_size=32000, hidden_size=4096, intermediate_size=14336,
                                        num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                                        tie_word_embeddings=False), 7_241_732_096),
    "LLaMA-3-8B": ("llama", dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                                 num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=False),
                   8_030_261_248),
    "Qwen2.5-7B": ("qwen2", dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                                 num_attention_heads=28, num_key_value_heads=4, tie_word_embeddings=False),
                   7_615_616_512),
    "Qwen3-8B": ("qwen3", dict(vocab_size=151936, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
                               num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                               tie_word_embeddings=False), 8_190_735_360),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_counts_match_the_published_ones(name):
    from transformers import AutoConfig

    model_type, values, published = PUBLISHED[name]
    assert ModelShape.of(AutoConfig.for_model(model_type, **values)).params == published


@pytest.mark.parametrize("family", sorted(TINY_FAMILIES))
def test_counts_match_the_built_model_for_every_family(family, tmp_path, llama3_tokenizer_dir):
    """Families with parts LLaMA lacks (Gemma-3's extra norms, OLMo-3's post-norms and q/k norms over all heads,
    SmolLM3's NoPE layers, Qwen2's biases): the planner counts what from_pretrained loads, tied counted once."""
    if not family_known(family):
        pytest.skip(f"{TINY_FAMILIES[family][0]} needs the transformers 5 stack (make install TRANSFORMERS=5)")
    from transformers import AutoConfig, AutoModelForCausalLM

    from colossal_llama2.tiny_base import build_tiny_family_model

    model_dir = build_tiny_family_model(family, llama3_tokenizer_dir, tmp_path / family)
    loaded = AutoModelForCausalLM.from_pretrained(str(model_dir))
    shape = ModelShape.of(AutoConfig.from_pretrained(str(model_dir)))
    assert shape.params == loaded.num_parameters() and shape.layers == 2 and shape.hidden == 64
