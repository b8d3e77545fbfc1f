"""Learn candidate pieces from a corpus with sentencepiece BPE (the Chinese-LLaMA way).

The model is trained in memory, on every core, with the same normalisation as LLaMA-2
(identity, no whitespace folding, digits split) so the learned pieces are strings the extended
tokenizer will actually meet. Its pieces come out best first: merges in the order BPE learned them
(most frequent first), then the single characters.
"""
from __future__ import annotations

import io
import os
from typing import Iterable

from sentencepiece import sentencepiece_model_pb2 as sp_pb2

from ..utils.errors import UserInputError
from ..utils.logging import get_logger
from .sp_surgery import NORMAL

logger = get_logger(__name__)


def learn_pieces(texts: Iterable[str], num_new_pieces: int, vocab_size: int | None = None,
                 character_coverage: float = 0.9995) -> list[str]:
    """Train sentencepiece BPE on ``texts`` and return its normal pieces, best first."""
    import sentencepiece as spm

    lines = [t for t in texts if t.strip()]
    if not lines:
        raise UserInputError("the corpus has no non-empty text", where="--train_corpus")
    if vocab_size is None:
        # Enough room for every character plus twice the pieces wanted; hard_vocab_limit=False lets
        # sentencepiece stop earlier on a small corpus instead of failing.
        vocab_size = len(set("".join(lines))) + 2 * num_new_pieces + 8
    model = io.BytesIO()
    logger.info("training sentencepiece BPE on %d samples (vocab_size %d)", len(lines), vocab_size)
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines), model_writer=model, model_type="bpe", vocab_size=vocab_size,
            hard_vocab_limit=False, character_coverage=character_coverage, split_digits=True,
            split_by_unicode_script=True, normalization_rule_name="identity", remove_extra_whitespaces=False,
            add_dummy_prefix=True, byte_fallback=False, unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1,
            max_sentence_length=1 << 20, num_threads=os.cpu_count() or 1, minloglevel=2)
    except RuntimeError as err:
        raise UserInputError(f"sentencepiece training failed: {err}", where="--train_corpus") from None
    proto = sp_pb2.ModelProto()
    proto.ParseFromString(model.getvalue())
    pieces = [p for p in proto.pieces if p.type == NORMAL]
    pieces.sort(key=lambda p: -p.score)  # already in this order; sorted() is stable, so this only guards it
    return [p.piece for p in pieces]
