"""SFT with a chat template: the model's own (LLaMA-3, ChatML/Qwen, Mistral's ``[INST]``), a file, or the project's.

``--chat_template auto`` (the default) renders with the tokenizer's own template when it has one, so the
trained model keeps speaking the format its base and every inference stack serving it expect; the
project's template (``conversation.py``) only when the tokenizer has none, or when asked (``project``).

Which tokens carry loss is derived by rendering, prefix by prefix, with no ``{% generation %}`` block
required of the template: for the assistant message k, the text rendered for messages[:k] with the
generation prompt ends where the answer starts, and the text rendered for messages[:k+1] ends after its
end-of-turn token; the labels are exactly that answer and its end token (whitespace a template puts after
the end token is not supervised). A template that does not render conversations prefix by prefix (one that
rewrites earlier turns) is refused with one clear line.
"""
from __future__ import annotations

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
        self.special = sorted({t for t in tokenizer.all_special_tokens} |
                              {t.content for t in tokenizer.added_tokens_decoder.values() if t.special}, key=len)

    def render(self, messages: list[dict], generation_prompt: bool = False) -> str:
        return self.tokenizer.apply_chat_template(messages, chat_template=self.template, tokenize=False,
                                                  add_generation_prompt=generation_prompt)

    def _answer_end(self, span: str) -> int:
        """Where the supervised part of an answer span ends: after its last special token, if it has one."""
        ends = [span.rfind(token) + len(token) for token in self.special if token and token in span]
        return max(ends) if ends else len(span)

    def turns(self, messages: list[dict]) -> tuple[Turn, ...]:
        full = self.render(messages)
        turns, pos = [], 0
        for k, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            start, end = self.render(messages[:k], True), self.render(messages[:k + 1])
            if not (end.startswith(start) and full.startswith(end)) or len(start) < pos:
                raise BadRecord("the chat template does not render this conversation prefix by prefix (it rewrites "
                                "earlier turns), so the answers' tokens cannot be found; use --chat_template project")
            answer = end[len(start):]
            cut = len(start) + self._answer_end(answer)
            turns.append(((full[pos:len(start)], False), (full[len(start):cut], True)))
            pos = cut
        if pos < len(full):
            turns[-1] = (*turns[-1], (full[pos:], False))
        return tuple(turns)


def template_record_parser(tokenizer, template: str):
    """Return ``parse(json_value) -> Record`` for SFT records rendered with ``template``."""
    renderer = TemplateRenderer(tokenizer, template)

    def parse(value: Any) -> Record:
        if not isinstance(value, dict):
            raise BadRecord(f"a record must be a JSON object, got {type(value).__name__}")
        if "messages" not in value:
            raise BadRecord("missing field 'messages'")
        system, pairs = conversation.parse_messages(value["messages"])
        category = (require_str(value, "category", allow_empty=False) if "category" in value
                    else conversation.DEFAULT_CATEGORY)
        try:
            turns = renderer.turns(conversation.to_chat_messages(system, pairs))
        except BadRecord:
            raise
        except Exception as err:  # the template's own raise_exception, or a Jinja error on this conversation
            raise BadRecord(f"the chat template failed on this conversation: {err}") from None
        return Record(category, turns)

    return parse


def check_rendering(tokenizer, template: str, encode) -> None:
    """Before any work: for a two-turn conversation with and without a system message, the prepared ids equal
    ``apply_chat_template``'s and the supervised tokens are exactly each answer with its end token.

    ``encode(doc)`` -> (ids, mask) is preparation's own tokenization of one document.
    """
    renderer = TemplateRenderer(tokenizer, template)
    pairs: Sequence[tuple[str, str]] = [("Name a river.", "The Nile, 清晨."), ("And one more?", "The Rhine")]
    for system in (None, "Be brief."):
        messages = conversation.to_chat_messages(system, pairs)
        try:
            doc = renderer.turns(messages)
            theirs = tokenizer.apply_chat_template(messages, chat_template=template, tokenize=True)
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
