"""Embedding growth for today's families on byte-level BPE tokenizers: LLaMA-3 (GQA, rope scaling, untied),
Qwen2 (qkv bias, tied), Mistral, Gemma-3 (scaled embeddings, tied), and on transformers 5 SmolLM3 (tied) and
OLMo-3. Expectations are computed independently: float64 means over the saved
source weights, subword ids from the *source* tokenizer through transformers."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from colossal_llama2.model.init_model import init_model
from colossal_llama2.tiny_base import TINY_FAMILIES
from colossal_llama2.tokenizer.init_tokenizer import extend_tokenizer
from colossal_llama2.utils.errors import UserInputError
from tests.test_bpe_tokenizer import whole_text

# family -> tokenizer flavour; smollm3 and olmo3 need the transformers 5 stack
FAMILIES = {"llama3": "llama3", "qwen2": "qwen2", "mistral": "llama3", "gemma3": "llama3", "smollm3": "llama3",
            "olmo3": "qwen2"}


def tied(family: str) -> bool:
    return TINY_FAMILIES[family][1]["tie_word_embeddings"]


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    out = {}
    for shard in sorted(Path(model_dir).glob("*.safetensors")):
        out.update(load_file(str(shard)))
    return out


@pytest.fixture(scope="module")
def extended(tmp_path_factory, llama3_tokenizer_dir, qwen2_tokenizer_dir, chinese_lines):
    corpus = tmp_path_factory.mktemp("zh") / "zh.txt"
    corpus.write_text("\n".join(chinese_lines * 2) + "\n", encoding="utf-8")
    out = {}
    for flavour, source in (("llama3", llama3_tokenizer_dir), ("qwen2", qwen2_tokenizer_dir)):
        target = tmp_path_factory.mktemp(f"ext_{flavour}") / "tok"
        extend_tokenizer(source, target, train_corpus=str(corpus), num_new_pieces=80)
        out[flavour] = (source, target)
    return out


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def grown(request, tmp_path_factory, extended):
    from colossal_llama2.tiny_base import build_tiny_family_model, family_known

    family = request.param
    if not family_known(family):
        pytest.skip(f"{TINY_FAMILIES[family][0]} needs the transformers 5 stack (make install TRANSFORMERS=5)")
    source_tok, target_tok = extended[FAMILIES[family]]
    source = build_tiny_family_model(family, source_tok, tmp_path_factory.mktemp(f"{family}_base"))
    out = {}
    for method in ("mean", "subword_mean"):
        target = tmp_path_factory.mktemp(f"{family}_{method}") / "model"
        report = init_model(source, target_tok, target, init_method=method, pad_to_multiple_of=64)
        out[method] = (target, report)
    return family, source, source_tok, target_tok, out


def test_config_unchanged_but_vocab_size_and_old_rows_bit_identical(grown):
    from transformers import AutoTokenizer

    family, source, _, target_tok, out = grown
    n_src = len(AutoTokenizer.from_pretrained(str(source)))
    n_tgt = len(AutoTokenizer.from_pretrained(str(target_tok)))
    before = json.loads((source / "config.json").read_text())
    old = weights(source)
    for target, report in out.values():
        after = json.loads((target / "config.json").read_text())
        assert after["vocab_size"] == -(-n_tgt // 64) * 64 == report.new_vocab_size
        assert {k: v for k, v in after.items() if k != "vocab_size"} == {k: v for k, v in before.items()
                                                                          if k != "vocab_size"}
        new = weights(target)
        assert set(new) == set(old)
        for name in old:
            if old[name].shape == new[name].shape:
                assert torch.equal(old[name], new[name]), name
            else:
                assert torch.equal(new[name][:n_src], old[name][:n_src]), name


def test_new_rows_mean_and_subword_mean(grown):
    from transformers import AutoTokenizer

    family, source, source_tok, target_tok, out = grown
    base, ext = AutoTokenizer.from_pretrained(str(source_tok)), AutoTokenizer.from_pretrained(str(target_tok))
    n_src, n_tgt = len(base), len(ext)
    by_id = {i: t for t, i in ext.get_vocab().items()}
    old = weights(source)
    matrices = [n for n in old if n.endswith("embed_tokens.weight") or n == "lm_head.weight"]
    assert len(matrices) == (1 if tied(family) else 2)
    checked = 0
    for name in matrices:
        mean = old[name].double().mean(0)
        grown_mean = weights(out["mean"][0])[name]
        torch.testing.assert_close(grown_mean[n_src:].double(), mean.expand(grown_mean.shape[0] - n_src, -1),
                                   rtol=0, atol=1e-6)
        grown_sub = weights(out["subword_mean"][0])[name]
        for i in range(n_src, n_tgt):
            text = whole_text(by_id[i])
            if text is None:
                continue
            ids = base.encode(text, add_special_tokens=False)
            assert len(ids) >= 2
            torch.testing.assert_close(grown_sub[i].double(), old[name][ids].double().mean(0), rtol=0, atol=1e-6)
            checked += 1
        torch.testing.assert_close(grown_sub[n_tgt:].double(), mean.expand(grown_sub.shape[0] - n_tgt, -1),
                                   rtol=0, atol=1e-6)  # padding rows
    assert checked >= 20 * len(matrices)


def test_tied_stays_tied_and_loads_with_plain_transformers(grown):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    family, _, _, target_tok, out = grown
    target = out["subword_mean"][0]
    model = AutoModelForCausalLM.from_pretrained(str(target))
    assert model.config.tie_word_embeddings is tied(family)
    assert (model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()) is tied(family)
    assert ("lm_head.weight" in weights(target)) is not tied(family)  # saved once when tied
    tokenizer = AutoTokenizer.from_pretrained(str(target))
    assert tokenizer.get_vocab() == AutoTokenizer.from_pretrained(str(target_tok)).get_vocab()
    ids = torch.tensor([tokenizer.encode("清晨的河边很安静")])
    assert ids.max() >= len(AutoTokenizer.from_pretrained(str(grown[2])))  # new tokens in use
    logits = model(ids).logits
    assert logits.shape[-1] == model.config.vocab_size and torch.isfinite(logits).all()


def test_a_target_that_does_not_extend_the_source_is_refused(tmp_path, grown, extended):
    family, source, _, _, _ = grown
    other = extended["qwen2" if FAMILIES[family] == "llama3" else "llama3"][1]
    with pytest.raises(UserInputError, match="does not extend the source tokenizer"):
        init_model(source, other, tmp_path / "out")
    assert not (tmp_path / "out").exists()
