"""The SFT conversation template: one format for training data, chat and inference.

Rendered text (``<s>``/``</s>`` are the tokenizer's bos/eos tokens, no ``<s>`` for a tokenizer without a bos
token; the system line is optional)::

    <s> System: {system}\\nHuman: {human 1}\\nAssistant: {assistant 1}</s> Human: {human 2}\\nAssistant: {assistant 2}</s>

Labels are taken on each assistant content (with the space before it) and its ``</s>``; everything
else is -100. For generation the prompt ends with ``Assistant:`` and the model answers `` ...</s>``.

The same format is the Jinja ``CHAT_TEMPLATE`` (Hugging Face ``apply_chat_template``; roles
``system``/``user`` (or ``human``)/``assistant``), written next to the dataset and installable into a
tokenizer directory (``install_chat_template``) so that inference renders exactly what training saw. Its
``{% generation %}`` block marks what carries loss, so ``apply_chat_template(...,
return_assistant_tokens_mask=True)`` gives the same labels as preparation.

Why this is token-exact for every tokenizer (sentencepiece ``legacy`` true, false or unset): preparation
renders the whole conversation into one text, exactly as the template does, tokenizes it in one call
(``<s>``/``</s>`` appear as text and are parsed as special tokens, as in ``apply_chat_template``), and
takes the labels from the assistant spans' character offsets. ``check_template`` verifies text, ids and
labels against transformers for the tokenizer at hand before any work is done.

Run as a script to install the template: ``python colossal_llama2/dataset/conversation.py TOKENIZER_DIR``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

from colossal_llama2.dataset.documents import Record, Turn, require_str
from colossal_llama2.dataset.jsonl_reader import BadRecord

DEFAULT_CATEGORY = "default"
CHAT_TEMPLATE_FILE = "chat_template.jinja"
USER_ROLES = ("human", "user")
ROLES = ("system", *USER_ROLES, "assistant")

CHAT_TEMPLATE = (
    "{%- if bos_token -%}{{- bos_token -}}{%- endif -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}"
    "{%- if not loop.first -%}{{- raise_exception('a system message may only come first') -}}{%- endif -%}"
    "{{- ' System: ' + message['content'] + '\\n' -}}"
    "{%- elif message['role'] in ['user', 'human'] -%}"
    "{%- if loop.first or messages[loop.index0 - 1]['role'] == 'assistant' -%}{{- ' ' -}}{%- endif -%}"
    "{{- 'Human: ' + message['content'] + '\\n' -}}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{- 'Assistant:' -}}{%- generation -%}{{- ' ' + message['content'] + eos_token -}}{%- endgeneration -%}"
    "{%- else -%}{{- raise_exception('unknown role ' + message['role']) -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- 'Assistant:' -}}{%- endif -%}"
)


def conversation_turns(system: str | None, pairs: Sequence[tuple[str, str]], bos_token: str | None,
                       eos_token: str) -> tuple[Turn, ...]:
    """The document pieces of a conversation, one turn per (human, assistant) pair: ``CHAT_TEMPLATE``'s text
    (no bos for a tokenizer without one, such as Qwen2's)."""
    bos_token = bos_token or ""
    turns = []
    for i, (human, assistant) in enumerate(pairs):
        prefix = (f"{bos_token} System: {system}\nHuman: " if system is not None else f"{bos_token} Human: ") \
            if i == 0 else " Human: "
        turns.append(((f"{prefix}{human}\nAssistant:", False), (f" {assistant}{eos_token}", True)))
    return tuple(turns)


def parse_messages(messages: Any) -> tuple[str | None, list[tuple[str, str]]]:
    """Validate a message list; return (system or None, [(human, assistant), ...])."""
    if not isinstance(messages, list):
        raise BadRecord(f"field 'messages' must be a list, got {type(messages).__name__}")
    if not messages:
        raise BadRecord("field 'messages' is empty")
    roles: list[str] = []
    contents: list[str] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]."
        if not isinstance(message, dict):
            raise BadRecord(f"messages[{i}] must be a JSON object, got {type(message).__name__}")
        key = "from" if "from" in message else "role"
        role = require_str(message, key, where=where)
        if role not in ROLES:
            raise BadRecord(f"unknown role {where}{key}={role!r} (expected one of {', '.join(ROLES)})")
        roles.append("human" if role in USER_ROLES else role)
        contents.append(require_str(message, "content", where=where))
    system = None
    if roles[0] == "system":
        system = contents[0]
        roles, contents = roles[1:], contents[1:]
    offset = 1 if system is not None else 0
    for i, role in enumerate(roles):
        expected = "human" if i % 2 == 0 else "assistant"
        if role != expected:
            raise BadRecord(f"roles out of order: messages[{i + offset}] is {role!r}, expected {expected!r}")
    if not roles:
        raise BadRecord("no human/assistant messages")
    if roles[-1] != "assistant":
        raise BadRecord("roles out of order: the conversation must end with an assistant message")
    return system, list(zip(contents[0::2], contents[1::2]))


SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
FORMATS_EXPECTED = ("missing field 'messages' (or ShareGPT's 'conversations', or Alpaca's 'instruction' and "
                    "'output')")


def record_messages(value: dict) -> list:
    """A record's conversation as a ``messages`` list, from any of the SFT formats in common use:

    * ``{"messages": [{"role"|"from": ..., "content": ...}, ...]}`` (OpenAI's and this project's);
    * ShareGPT: ``{"conversations": [{"from": "human"|"gpt"|"system", "value": ...}, ...], "system"?: ...}``;
    * Alpaca: ``{"instruction": ..., "input"?: ..., "output": ..., "system"?: ..., "history"?: [[q, a], ...]}``,
      the user turn being the instruction, a newline and the input (LLaMA-Factory's reading).
    Shapes are checked here; roles, order and contents by ``parse_messages``.
    """
    if "messages" in value:
        return value["messages"]
    system = [{"role": "system", "content": value["system"]}] if value.get("system") is not None else []
    if "conversations" in value:
        turns = value["conversations"]
        if not isinstance(turns, list) or not all(isinstance(t, dict) for t in turns):
            raise BadRecord("field 'conversations' must be a list of JSON objects")
        for i, turn in enumerate(turns):
            if turn.get("from") not in SHAREGPT_ROLES:
                raise BadRecord(f"unknown role conversations[{i}].from={turn.get('from')!r} (expected one of "
                                f"{', '.join(SHAREGPT_ROLES)})")
            if "value" not in turn:
                raise BadRecord(f"missing field 'conversations[{i}].value'")
        return system + [{"role": SHAREGPT_ROLES[t["from"]], "content": t["value"]} for t in turns]
    if "instruction" in value and "output" in value:
        history = value.get("history") or []
        if not isinstance(history, list) or not all(isinstance(h, list) and len(h) == 2 for h in history):
            raise BadRecord("field 'history' must be a list of [question, answer] pairs")
        question = require_str(value, "instruction")
        extra = value.get("input") or ""
        if not isinstance(extra, str):
            raise BadRecord(f"field 'input' must be a string, got {type(extra).__name__}")
        messages = list(system)
        for q, a in history:
            messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        return messages + [{"role": "user", "content": f"{question}\n{extra}" if extra else question},
                           {"role": "assistant", "content": value["output"]}]
    raise BadRecord(FORMATS_EXPECTED)


def sft_record_parser(bos_token: str, eos_token: str):
    """Return ``parse(json_value) -> Record`` for SFT records (``record_messages``'s formats, "category"?: str)."""

    def parse(value: Any) -> Record:
        if not isinstance(value, dict):
            raise BadRecord(f"a record must be a JSON object, got {type(value).__name__}")
        system, pairs = parse_messages(record_messages(value))
        category = require_str(value, "category", allow_empty=False) if "category" in value else DEFAULT_CATEGORY
        return Record(category, conversation_turns(system, pairs, bos_token, eos_token))

    return parse


def to_chat_messages(system: str | None, pairs: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    """The Hugging Face ``messages`` list of a conversation."""
    out = [{"role": "system", "content": system}] if system is not None else []
    for human, assistant in pairs:
        out += [{"role": "user", "content": human}, {"role": "assistant", "content": assistant}]
    return out


def install_chat_template(tokenizer_dir: str | Path, template: str = CHAT_TEMPLATE) -> Path:
    """Store ``template`` as ``chat_template`` in ``tokenizer_dir/tokenizer_config.json`` (atomically)."""
    from colossal_llama2.utils.fs import atomic_write_text

    config_path = Path(tokenizer_dir) / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["chat_template"] = template
    atomic_write_text(config_path, json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    return config_path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Install the project's SFT chat template into a tokenizer dir.")
    parser.add_argument("tokenizer_dir", help="directory holding tokenizer_config.json (a tokenizer or model dir)")
    args = parser.parse_args(argv)
    from colossal_llama2.utils.errors import UserInputError

    if not (Path(args.tokenizer_dir) / "tokenizer_config.json").is_file():
        raise UserInputError("no tokenizer_config.json in it", where=args.tokenizer_dir)
    print(f"chat template installed in {install_chat_template(args.tokenizer_dir)}")
    return 0


if __name__ == "__main__":
    from colossal_llama2.utils.errors import run_cli

    run_cli(main)
