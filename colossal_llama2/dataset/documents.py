"""The one shape every record takes before tokenization, shared by pretraining and SFT.

A *document* is a tuple of *turns*; a turn is a tuple of *pieces*; a piece is ``(value, supervised)``
where ``value`` is text, or a token id at the very start or end of the document (``<s>``, ``</s>``), and
``supervised`` says whether its tokens carry loss (label = id) or not (label = -100). Turns matter only to
SFT truncation, which keeps whole turns; a pretraining document is one turn.

A document's text pieces are joined and tokenized in ONE call -- exactly the text inference feeds the
model -- and each token's label follows the character span it covers (a token straddling the edge of a
supervised span is supervised). Pretraining record ``{"source", "target", "category"}`` becomes::

    (<s> id, no loss) (source, no loss) (target, loss) (</s> id, loss)

so its ids are exactly ``tokenizer(source + target)`` (which adds ``<s>``) followed by ``</s>``: source and
target are joined as they are (put a space or newline at the end of the source if you want one). SFT
conversations are the rendered chat template, ``<s>``/``</s>`` included as text (conversation.py).
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


def pretrain_record_parser(bos_token_id: int | None, eos_token_id: int | None):
    """Return ``parse(json_value) -> Record`` for pretraining records (None: no such token, see boundaries.py)."""
    start = ((bos_token_id, False),) if bos_token_id is not None else ()
    end = ((eos_token_id, True),) if eos_token_id is not None else ()

    def parse(value: Any) -> Record:
        if not isinstance(value, dict):
            raise BadRecord(f"a record must be a JSON object, got {type(value).__name__}")
        source = require_str(value, "source")
        target = require_str(value, "target")
        category = require_str(value, "category", allow_empty=False)
        turn: Turn = (*start, (source, False), (target, True), *end)
        return Record(category, (turn,))

    return parse
