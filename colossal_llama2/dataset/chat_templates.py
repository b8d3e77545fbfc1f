"""SFT with a chat template: the model's own (LLaMA-3, ChatML/Qwen, Mistral's ``[INST]``, gpt-oss's harmony), a file,
or the project's.

``--chat_template auto`` (the default) renders with the tokenizer's own template when it has one, so the
trained model keeps speaking the format its base and every inference stack serving it expect; the
project's template (``conversation.py``) only when the tokenizer has none, or when asked (``project``).

Which tokens carry loss comes from ONE render of the whole conversation, with no ``{% generation %}`` block
required of the template and no assumption that it renders prefix by prefix (Qwen3's drops the reasoning of
earlier turns and gives the last one an empty ``<think></think>``; gpt-oss's ends the last turn with
``<|return|>`` and earlier ones with ``<|end|>``; some LLaMA-3 templates always append an assistant header).
Every message's text is found in the render in order; for an assistant message, the supervised span starts
where the prompt for it ends -- the render of the conversation before it with the generation prompt, when the
full render continues that text; else right after the last generation prompt (what ``add_generation_prompt``
appends) before the answer -- so a reasoning block the template renders for that message is supervised as
rendered; it ends after the answer and the special token that closes it (the end of turn). Nothing the template adds between turns carries loss.
An answer whose text is not in the render is a bad record, named with its turn.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

from ..utils.errors import UserInputError
from . import conversation
from .documents import Record, Turn, require_str
from .jsonl_reader import BadRecord

CHOICES_HELP = ("auto: the tokenizer's own template if it has one, else the project's; model: the tokenizer's own "
                "(refused if it has none); project: the project's 'Human:/Assistant:' template; or a path to a "
                "Jinja template file")


def choose_template(tokenizer, choice: str) -> tuple[str, str]:
    """(template text, what it is: "model", "project" or the file) for ``--chat_template``."""
    own = getattr(tokenizer, "chat_template", None)
    if isinstance(own, dict):  # several named templates: the default one
        own = own.get("default")
    if choice == "auto":
        choice = "model" if own else "project"
    if choice == "model":
        if not own:
            raise UserInputError("the tokenizer has no chat template of its own; use --chat_template project or a "
                                 "template file", where="--chat_template")
        return own, "model"
    if choice == "project":
        return conversation.CHAT_TEMPLATE, "project"
    path = Path(choice)
    if not path.is_file():
        raise UserInputError(f"{choice} is neither auto, model, project nor a template file", where="--chat_template")
    return path.read_text(encoding="utf-8"), str(path)


class TemplateRenderer:
    """Conversations -> document turns (text pieces, answer spans supervised) with a Jinja chat template."""

    def __init__(self, tokenizer, template: str):
        self.tokenizer, self.template = tokenizer, template
        special = {t for t in tokenizer.all_special_tokens} | {
            t.content for t in tokenizer.added_tokens_decoder.values() if t.special}
        # the special token that closes an answer (whitespace before it allowed): the end of turn
        self._end_of_turn = re.compile(r"\s*(" + "|".join(re.escape(s) for s in sorted(special, key=len, reverse=True)
                                                          if s) + ")") if special else None
        self.generation_prompt = self._generation_prompt()
        self.last_end_token: str | None = None  # what closed the last answer rendered: where generation stops

    def render(self, messages: list[dict], generation_prompt: bool = False) -> str:
        return self.tokenizer.apply_chat_template(messages, chat_template=self.template, tokenize=False,
                                                  add_generation_prompt=generation_prompt)

    def _generation_prompt(self) -> str:
        """What the template appends for the assistant to answer ('' for a template that ignores the flag)."""
        probe = [{"role": "user", "content": "Hi"}]
        try:
            bare, prompted = self.render(probe), self.render(probe, True)
        except Exception:  # a template that wants a system message or more: no prompt known
            return ""
        return prompted[len(bare):] if prompted.startswith(bare) else ""

    def _answer_start(self, full: str, pos: int, anchor: int, prompt_messages: list[dict]) -> int:
        """Where an answer (or its reasoning) found at ``anchor`` begins to be supervised: where the render of the
        conversation so far with the generation prompt ends, when the full render continues it (what inference
        feeds the model, to the character); else right after the last generation prompt before ``anchor``."""
        prefix = self.render(prompt_messages, True)
        if pos <= len(prefix) <= anchor and full.startswith(prefix):
            return len(prefix)
        prompt = self.generation_prompt
        found = full.rfind(prompt, pos, anchor) if prompt else -1
        return found + len(prompt) if found >= 0 else anchor

    def turns(self, messages: list[dict]) -> tuple[Turn, ...]:
        full = self.render(messages)
        turns, pos, done = [], 0, 0  # pos: where the search goes on; done: end of the last turn's pieces
        for k, message in enumerate(messages):
            content = message["content"].strip()
            if message["role"] != "assistant":
                found = full.find(content, pos) if content else -1
                pos = found + len(content) if found >= 0 else pos  # a message the template drops is skipped
                continue
            reasoning = (message.get("reasoning_content") or "").strip()
            at = full.find(reasoning, pos) if reasoning else -1  # -1: none, or dropped by the template
            answer = self._find_answer(full, content, at + len(reasoning) if at >= 0 else pos)
            if at >= 0 and answer < 0:  # the reasoning text found belongs elsewhere
                at, answer = -1, self._find_answer(full, content, pos)
            if answer < 0:
                raise BadRecord(f"messages[{k}] (assistant): its text is not in the chat template's rendering of "
                                f"the conversation, so its tokens cannot be supervised")
            start = self._answer_start(full, pos, at if at >= 0 else answer, messages[:k])
            end = answer + len(content)
            closing = self._end_of_turn.match(full, end) if self._end_of_turn else None
            self.last_end_token = closing.group(1) if closing else None
            if closing:
                end = closing.end()
            turns.append(((full[done:start], False), (full[start:end], True)))
            pos = done = end
        if done < len(full):
            turns[-1] = (*turns[-1], (full[done:], False))
        return tuple(turns)

    def _find_answer(self, full: str, content: str, pos: int) -> int:
        """Where the answer's text starts in ``full`` from ``pos`` (an empty answer: after the next generation
        prompt); -1 when it is not there."""
        if content:
            return full.find(content, pos)
        prompt = self.generation_prompt
        found = full.find(prompt, pos) if prompt else -1
        return found + len(prompt) if found >= 0 else -1


REASONING_FIELDS = ("reasoning_content", "thinking")  # Qwen3's and DeepSeek-R1's name, gpt-oss's
_THINK = re.compile(r"\s*<think>(.*?)</think>\s*", re.S)


def template_messages(raw: list) -> list[dict]:
    """A record's ``messages`` (already validated) as the template sees them: roles ``system``/``user``/
    ``assistant``; an assistant's reasoning -- its ``reasoning_content`` or ``thinking`` field, or a leading
    ``<think>...</think>`` in its content -- under both names, which templates read one or the other of."""
    out = []
    for i, message in enumerate(raw):
        role = message.get("from", message.get("role"))
        role = "user" if role in conversation.USER_ROLES else role
        content, reasoning = message["content"], None
        if role == "assistant":
            given = [message[key] for key in REASONING_FIELDS if message.get(key) is not None]
            for value in given:
                if not isinstance(value, str):
                    raise BadRecord(f"messages[{i}]: the reasoning must be a string, got {type(value).__name__}")
            think = _THINK.match(content)
            if given:
                reasoning = given[0]
            elif think:
                reasoning, content = think.group(1).strip("\n"), content[think.end():]
        out.append({"role": role, "content": content})
        if reasoning:
            out[-1].update({key: reasoning for key in REASONING_FIELDS})
    return out


def template_record_parser(tokenizer, template: str):
    """Return ``parse(json_value) -> Record`` for SFT records rendered with ``template``."""
    renderer = TemplateRenderer(tokenizer, template)

    def parse(value: Any) -> Record:
        if not isinstance(value, dict):
            raise BadRecord(f"a record must be a JSON object, got {type(value).__name__}")
        raw = conversation.record_messages(value)
        conversation.parse_messages(raw)  # roles and contents valid, in order
        category = (require_str(value, "category", allow_empty=False) if "category" in value
                    else conversation.DEFAULT_CATEGORY)
        messages = template_messages(raw)
        try:
            turns = renderer.turns(messages)
        except BadRecord:
            raise
        except Exception as err:  # the template's own raise_exception, or a Jinja error on this conversation
            raise BadRecord(f"the chat template failed on this conversation: {err}") from None
        return Record(category, turns)

    return parse


PROBE: Sequence[tuple[str, str]] = [("Name a river.", "The Nile, 清晨."), ("And one more?", "The Rhine")]


def end_of_turn_tokens(tokenizer, template: str) -> list[str]:
    """The special token ``template`` closes the last answer of a conversation with: where generation after SFT
    must stop (gpt-oss's ``<|return|>``, not the ``<|end|>`` that closes its reasoning and earlier turns)."""
    renderer = TemplateRenderer(tokenizer, template)
    renderer.turns(template_messages(conversation.to_chat_messages(None, PROBE)))
    return [renderer.last_end_token] if renderer.last_end_token else []


def check_rendering(tokenizer, template: str, encode) -> None:
    """Before any work: for a two-turn conversation with and without a system message, the prepared ids equal
    ``apply_chat_template``'s and the supervised tokens are exactly each answer with its end token.

    ``encode(doc)`` -> (ids, mask) is preparation's own tokenization of one document.
    """
    renderer = TemplateRenderer(tokenizer, template)
    pairs = PROBE
    for system in (None, "Be brief."):
        messages = conversation.to_chat_messages(system, pairs)
        try:
            doc = renderer.turns(messages)
            theirs = tokenizer.apply_chat_template(messages, chat_template=template, tokenize=True, return_dict=False)
        except BadRecord as err:
            raise UserInputError(str(err), where="--chat_template") from None
        except Exception as err:
            if system is not None:
                continue  # a template without system messages (Mistral's): records with one are bad lines
            raise UserInputError(f"the chat template fails on a plain conversation: {err}",
                                 where="--chat_template") from None
        ids, mask = encode(doc)
        if list(ids) != list(theirs):
            raise UserInputError("preparation does not reproduce apply_chat_template's ids with this chat template "
                                 "and tokenizer", where="--chat_template")
        supervised = tokenizer.decode([i for i, m in zip(ids, mask) if m])
        if not all(answer.strip() in supervised for _, answer in pairs):
            raise UserInputError("the supervised tokens are not the assistant answers", where="--chat_template")
