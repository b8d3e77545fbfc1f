"""SFT preparation with the tokenizer settings LLaMA checkpoints really ship: ``"legacy"`` true, unset, false.

For each, with an extended (Chinese) tokenizer: every prepared sample's ids are what inference feeds the
model (``apply_chat_template``), and its labels are exactly transformers' assistant mask from the
template's ``{% generation %}`` block: the assistant turns with their ``</s>``, nothing of system or user.
Conversations include leading/trailing spaces, newlines and Chinese, where legacy and non-legacy
sentencepiece tokenizers differ most.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from colossal_llama2.dataset.conversation import CHAT_TEMPLATE
from colossal_llama2.dataset.prepare import prepare
from colossal_llama2.dataset.schema import IGNORE_INDEX, part_name
from colossal_llama2.tokenizer.init_tokenizer import extend_tokenizer
from colossal_llama2.utils.stack import transformers_5
from tests.test_prepare_sft import hf_messages, options, write_jsonl

MAX_LEN = 4096
ANSWERS = ["The Nile.", " 尼罗河，在非洲。", "Two\nlines ", "  spaced out", "你好！Hello 123", "x"]
QUESTIONS = ["Name a river?", " 你好吗？", "What is 2+2?\n", "  leading spaces", "Tab\there", "中文问题"]


def _conversations() -> list[dict]:
    convs = []
    for i in range(18):
        msgs = [{"from": "system", "content": [" Be brief.", "你是助手。", "System\nprompt"][i % 3]}] if i % 4 < 2 else []
        for t in range(1 + i % 3):
            msgs += [{"from": "human", "content": QUESTIONS[(i // 2 + t) % len(QUESTIONS)]},
                     {"from": "assistant", "content": ANSWERS[(i * 5 + 2 * t) % len(ANSWERS)]}]
        convs.append({"messages": msgs})
    return convs


@pytest.fixture(scope="module")
def extended_base(tmp_path_factory, tiny_tokenizer_dir, chinese_lines) -> Path:
    tmp = tmp_path_factory.mktemp("zh")
    chars = sorted({c for line in chinese_lines for c in line if "\u4e00" <= c <= "\u9fff"} | set("尼罗河非洲你好吗助手问题中文是"))
    pieces = tmp / "pieces.jsonl"
    pieces.write_text("".join(json.dumps({"piece": p}, ensure_ascii=False) + "\n" for p in chars + ["你好", "尼罗河"]),
                      encoding="utf-8")
    return tmp, pieces


@pytest.mark.parametrize("legacy", [True, None, False], ids=["legacy-true", "legacy-missing", "legacy-false"])
def test_sft_ids_are_inference_ids_and_labels_the_assistant_mask(tmp_path, tiny_tokenizer_dir, extended_base, legacy):
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    _, pieces = extended_base
    source = tmp_path / "source"
    shutil.copytree(tiny_tokenizer_dir, source)
    config = json.loads((source / "tokenizer_config.json").read_text())
    config.pop("legacy")
    if legacy is not None:
        config["legacy"] = legacy
    (source / "tokenizer_config.json").write_text(json.dumps(config))
    extend_tokenizer(source, tmp_path / "tok", expand_tokens_file=str(pieces))
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    if transformers_5():  # no LlamaTokenizer here (tokenizer.json loads as written): the setting travels on
        assert json.loads((tmp_path / "tok" / "tokenizer_config.json").read_text()).get("legacy") == legacy
    else:
        assert tokenizer.legacy is (True if legacy is None else legacy)

    convs = _conversations()
    write_jsonl(tmp_path / "in" / "chat.jsonl", convs)
    summary = prepare(options(tmp_path, tmp_path / "tok", tmp_path / "in", max_length=MAX_LEN))
    rows = [r for i in range(summary["num_parts"]) for r in load_from_disk(str(tmp_path / "arrow" / part_name(i)))]
    samples = {tuple(ids[sum(r["seq_lengths"][:k]):sum(r["seq_lengths"][:k + 1])]):
               labels[sum(r["seq_lengths"][:k]):sum(r["seq_lengths"][:k + 1])]
               for r in rows for ids, labels in [(r["input_ids"], r["labels"])] for k in range(len(r["seq_lengths"]))}
    assert summary["sequences"] == len(convs) and len(samples) == len({json.dumps(c) for c in convs}) > 10
    for conv in convs:
        rendered = tokenizer.apply_chat_template(hf_messages(conv), chat_template=CHAT_TEMPLATE, return_dict=True,
                                                 return_assistant_tokens_mask=True)
        ids = rendered["input_ids"]
        labels = samples[tuple(ids)]  # KeyError: prepared ids differ from inference's
        expected = [t if m else IGNORE_INDEX for t, m in zip(ids, rendered["assistant_masks"])]
        assert labels == expected
        supervised = [t for t in labels if t != IGNORE_INDEX]
        answers = [m["content"] for m in conv["messages"] if m["from"] == "assistant"]
        assert supervised.count(tokenizer.eos_token_id) == len(answers)
        text = tokenizer.decode(supervised)
        for answer in answers:
            assert answer.strip() in text
        for message in conv["messages"]:
            if message["from"] != "assistant" and message["content"].strip() not in " ".join(answers):
                assert message["content"].strip() not in text
