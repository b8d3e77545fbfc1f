"""The one shape every record takes before tokenization, shared by pretraining and SFT.

A *document* is a tuple of *turns*; a turn is a tuple of *pieces*; a piece is ``(value, supervised)``
where ``value`` is either text (tokenized on its own, without special tokens) or a token id (a special
token such as ``<s>`` or ``</s>``), and ``supervised`` says whether its tokens carry loss (label = id)
or not (label = -100). Turns matter only to SFT truncation, which keeps whole turns; a pretraining
document is one turn.

Pretraining record ``{"source", "target", "category"}`` becomes one turn::

    (<s>, no loss) (source, no loss) (target, loss) (</s>, loss)

Source and target are tokenized separately, so the target's first token never merges with the
source's last one and the label boundary falls exactly between them. With a LLaMA (sentencepiece,
dummy-prefix) tokenizer each piece starts a new word (``▁``), which is what joining source and target
with a space would give; with an empty source the ids are exactly ``tokenizer(target) + [</s>]``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

from .jsonl_reader import BadRecord

Piece = tuple[Union[str, int], bool]
Turn = tuple[Piece, ...]
Document = tuple[Turn, ...]


@dataclass(frozen=True)
class Record:
    category: str
    document: Document


def require_str(obj: dict, key: str, *, allow_empty: bool = True, where: str = "") -> str:
    if key not in obj:
        raise BadRecord(f"missing field {where}{key!r}")
    value = obj[key]
    if not isinstance(value, str):
        raise BadRecord(f"field {where}{key!r} must be a string, got {type(value).__name__}")
    if not allow_empty and not value:
        raise BadRecord(f"field {where}{key!r} is empty")
    return value


def pretrain_record_parser(bos_token_id: int, eos_token_id: int):
    """Return ``parse(json_value) -> Record`` for pretraining records."""

    def parse(value: Any) -> Record:
        if not isinstance(value, dict):
            raise BadRecord(f"a record must be a JSON object, got {type(value).__name__}")
        source = require_str(value, "source")
        target = require_str(value, "target")
        category = require_str(value, "category", allow_empty=False)
        turn: Turn = ((bos_token_id, False), (source, False), (target, True), (eos_token_id, True))
        return Record(category, (turn,))

    return parse
