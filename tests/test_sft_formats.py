"""SFT records in the formats in common use (``messages``, ShareGPT's ``conversations``, Alpaca's
``instruction``/``input``/``output``) give the same dataset for the same conversations, with the model's own
template (Qwen2.5's real one) and with the project's."""
from __future__ import annotations

import json

import pytest

from colossal_llama2.dataset.prepare import prepare
from colossal_llama2.dataset.schema import part_name
from colossal_llama2.utils.errors import UserInputError
from tests.helpers.registry import tokenizer_dir
from tests.test_prepare_sft import options, write_jsonl

MESSAGES = [
    {"messages": [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Translate\n冬天很冷"},
                  {"role": "assistant", "content": "Winter is cold."}], "category": "mt"},
    {"messages": [{"role": "user", "content": "Name a river."}, {"role": "assistant", "content": "The Nile."},
                  {"role": "user", "content": "And another?"}, {"role": "assistant", "content": "The Rhine."}],
     "category": "qa"},
]
SHAREGPT = [
    {"system": "Answer briefly.", "category": "mt",
     "conversations": [{"from": "human", "value": "Translate\n冬天很冷"}, {"from": "gpt", "value": "Winter is cold."}]},
    {"category": "qa", "conversations": [{"from": "human", "value": "Name a river."}, {"from": "gpt", "value": "The Nile."},
                                         {"from": "human", "value": "And another?"},
                                         {"from": "gpt", "value": "The Rhine."}]},
]
ALPACA = [
    {"system": "Answer briefly.", "instruction": "Translate", "input": "冬天很冷", "output": "Winter is cold.",
     "category": "mt"},
    {"instruction": "And another?", "input": "", "output": "The Rhine.", "history": [["Name a river.", "The Nile."]],
     "category": "qa"},
]


def _rows(tmp, tok, records, name, **kw):
    from datasets import load_from_disk

    write_jsonl(tmp / name / "in" / "data.jsonl", records)
    summary = prepare(options(tmp / name, tok, tmp / name / "in", max_length=512, num_spliced_dataset_bins=1, **kw))
    return [(row["input_ids"], row["labels"]) for i in range(summary["num_parts"])
            for row in load_from_disk(str(tmp / name / "arrow" / part_name(i)))]


@pytest.mark.parametrize("template", ["model", "project"])
def test_sharegpt_and_alpaca_records_prepare_as_their_messages_do(tmp_path, template):
    tok = tokenizer_dir("qwen2_5")
    expected = _rows(tmp_path, tok, MESSAGES, "messages", chat_template=template)
    assert len(expected) == 2 and all(any(label != -100 for label in labels) for _, labels in expected)
    assert _rows(tmp_path, tok, SHAREGPT, "sharegpt", chat_template=template) == expected
    assert _rows(tmp_path, tok, ALPACA, "alpaca", chat_template=template) == expected


@pytest.mark.parametrize("record, says", [
    ({"text": "hello"}, "missing field 'messages' (or ShareGPT's 'conversations', or Alpaca's"),
    ({"conversations": [{"from": "robot", "value": "x"}]}, "unknown role conversations[0].from='robot'"),
    ({"conversations": [{"from": "human"}]}, "missing field 'conversations[0].value'"),
    ({"instruction": "q", "output": "a", "history": [["only a question"]]}, "field 'history' must be a list of"),
])
def test_a_record_of_no_known_format_is_a_bad_line(tmp_path, record, says):
    write_jsonl(tmp_path / "in" / "data.jsonl", [MESSAGES[0], record])
    with pytest.raises(UserInputError) as err:
        prepare(options(tmp_path, tokenizer_dir("qwen2_5"), tmp_path / "in", max_length=512))
    assert str(err.value).startswith(f"{tmp_path / 'in' / 'data.jsonl'}:2: {says}"), str(err.value)
