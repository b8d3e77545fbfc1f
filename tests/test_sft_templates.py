"""SFT rendered with the model's own chat template (LLaMA-3, ChatML/Qwen2, Mistral [INST]).

Expectations come from transformers' ``apply_chat_template`` (the ids) and from searching the rendered text
for each answer and the end token after it (the labels): a different algorithm from preparation's
prefix-by-prefix rendering.
"""
from __future__ import annotations

import json
import shutil

import pytest

from colossal_llama2.dataset.conversation import CHAT_TEMPLATE
from colossal_llama2.dataset.prepare import prepare
from colossal_llama2.dataset.schema import IGNORE_INDEX, META_FILE, part_name
from colossal_llama2.tiny_base import MISTRAL_CHAT_TEMPLATE
from colossal_llama2.utils.errors import UserInputError
from tests.helpers.labels import supervised_runs
from tests.test_prepare_sft import conversations, hf_messages, options, write_jsonl

END_TOKENS = {"llama3": "<|eot_id|>", "qwen2": "<|im_end|>", "mistral": "<|end_of_text|>"}


@pytest.fixture(scope="module")
def tokenizer_dirs(tmp_path_factory, llama3_tokenizer_dir, qwen2_tokenizer_dir):
    mistral = tmp_path_factory.mktemp("mistral_tok") / "tok"
    shutil.copytree(llama3_tokenizer_dir, mistral)
    config = json.loads((mistral / "tokenizer_config.json").read_text())
    config["chat_template"] = MISTRAL_CHAT_TEMPLATE
    (mistral / "tokenizer_config.json").write_text(json.dumps(config))
    (mistral / "chat_template.jinja").unlink(missing_ok=True)  # transformers 5 saves the template there; it wins
    return {"llama3": llama3_tokenizer_dir, "qwen2": qwen2_tokenizer_dir, "mistral": mistral}


# What each family's prompt for an answer ends with: the answer (and the end token) follow it.
ANSWER_AFTER = {"llama3": "<|start_header_id|>assistant<|end_header_id|>\n\n", "qwen2": "<|im_start|>assistant\n",
                "mistral": " [/INST]"}


def expected_labels(tokenizer, text: str, messages: list[dict], family: str) -> list[bool]:
    """Supervised tokens found by search: from the family's answer marker through the next end token."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    spans, cursor = [], 0
    for message in messages:  # every message's text in order, so an answer is never found inside a question
        if message["role"] == "assistant":
            start = text.index(ANSWER_AFTER[family], cursor) + len(ANSWER_AFTER[family])
            assert text.index(message["content"].strip(), start) <= start + 1
            cursor = text.index(END_TOKENS[family], start) + len(END_TOKENS[family])
            spans.append((start, cursor))
        else:
            cursor = text.index(message["content"], cursor) + len(message["content"])
    return [any(s <= a < e for s, e in spans) for a, _ in enc["offset_mapping"]]


@pytest.mark.parametrize("family", ["llama3", "qwen2", "mistral"])
def test_model_template_ids_and_labels(tmp_path, tokenizer_dirs, english_lines, chinese_lines, family):
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    tok_dir = tokenizer_dirs[family]
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    records = conversations(english_lines, chinese_lines)
    if family == "mistral":  # no system role in Mistral's template
        records = [{**r, "messages": [m for m in r["messages"] if m["from"] != "system"]} for r in records]
    write_jsonl(tmp_path / "in" / "chat.jsonl", records)
    summary = prepare(options(tmp_path, tok_dir, tmp_path / "in", max_length=1024))
    meta = json.loads((tmp_path / "arrow" / part_name(0) / META_FILE).read_text())
    assert meta["chat_template"] == tokenizer.chat_template != CHAT_TEMPLATE
    by_text = {}
    for record in records:
        messages = hf_messages(record)
        by_text[tokenizer.apply_chat_template(messages, tokenize=False)] = messages
    seen = 0
    for i in range(summary["num_parts"]):
        for row in load_from_disk(str(tmp_path / "arrow" / part_name(i))):
            start = 0
            for length in row["seq_lengths"]:
                ids, labels = row["input_ids"][start:start + length], row["labels"][start:start + length]
                start += length
                text = tokenizer.decode(ids)
                messages = by_text[text]  # the whole conversation, exactly as apply_chat_template renders it
                assert ids == tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False)
                want = expected_labels(tokenizer, text, messages, family)
                assert [label != IGNORE_INDEX for label in labels] == want, text
                assert [label for label in labels if label != IGNORE_INDEX] == [t for t, w in zip(ids, want) if w]
                seen += 1
    assert seen == len(records)


def test_project_template_on_request_and_install_refusals(tmp_path, tokenizer_dirs, english_lines, chinese_lines):
    tok_dir = tmp_path / "tok"
    shutil.copytree(tokenizer_dirs["qwen2"], tok_dir)
    write_jsonl(tmp_path / "in" / "chat.jsonl", conversations(english_lines, chinese_lines)[:6])
    before = (tok_dir / "tokenizer_config.json").read_bytes()
    with pytest.raises(UserInputError, match="--install_chat_template: .*already has a different chat template"):
        prepare(options(tmp_path, tok_dir, tmp_path / "in", chat_template="project", install_chat_template=True))
    assert (tok_dir / "tokenizer_config.json").read_bytes() == before and not (tmp_path / "arrow").exists()
    prepare(options(tmp_path, tok_dir, tmp_path / "in", chat_template="project"))
    assert json.loads((tmp_path / "arrow" / part_name(0) / META_FILE).read_text())["chat_template"] == CHAT_TEMPLATE
    assert (tok_dir / "tokenizer_config.json").read_bytes() == before  # not installed unless asked
    prepare(options(tmp_path, tok_dir, tmp_path / "in", chat_template="project", install_chat_template=True,
                    replace_chat_template=True, overwrite=True))
    assert json.loads((tok_dir / "tokenizer_config.json").read_text())["chat_template"] == CHAT_TEMPLATE
    with pytest.raises(UserInputError, match="--chat_template: nope is neither"):
        prepare(options(tmp_path, tok_dir, tmp_path / "in", chat_template="nope", overwrite=True))


def test_a_template_that_rewrites_earlier_turns_is_supervised_on_its_answers(tmp_path, tokenizer_dirs, english_lines,
                                                                               chinese_lines):
    """Numbering every turn by the conversation's length changes every earlier turn as the conversation grows: no
    prefix of the render is the render of a prefix. The answers are still found in the one full render."""
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    template = tmp_path / "t.jinja"
    template.write_text("{% for m in messages %}[{{ messages|length }}]{{ m['content'] }}{{ eos_token }}{% endfor %}")
    records = conversations(english_lines, chinese_lines)[:6]
    write_jsonl(tmp_path / "in" / "chat.jsonl", records)
    prepare(options(tmp_path, tokenizer_dirs["llama3"], tmp_path / "in", chat_template=str(template), max_length=1024,
                    num_spliced_dataset_bins=1))
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dirs["llama3"]))
    eos = tokenizer.eos_token  # the template closes every message with it
    want = sorted(tuple(f"{m['content']}{eos}" for m in r["messages"] if m["from"] == "assistant") for r in records)
    got = [tuple(tokenizer.decode(run) for run in supervised_runs(row["input_ids"], row["labels"]))
           for row in load_from_disk(str(tmp_path / "arrow" / part_name(0)))]
    assert sorted(got) == want
