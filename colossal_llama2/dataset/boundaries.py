"""Where documents begin and end, by the tokenizer's own convention (one place for every model family).

LLaMA-2/3 and Mistral tokenizers add a bos token themselves, so a document starts with it; Qwen2/2.5/3
tokenizers have no bos (``bos_token: null``) and separate documents with their end-of-text token only.
Inventing a bos for them would teach the model a start marker it never sees at inference. So: bos only
where the tokenizer adds one when encoding, eos (or the family's end-of-text token) after every document.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..utils.errors import UserInputError

# Used as the document end when a tokenizer names no eos token but has one of these in its vocabulary.
END_OF_TEXT_TOKENS = ("<|endoftext|>", "<|end_of_text|>", "</s>")


@dataclass(frozen=True)
class DocumentBoundaries:
    bos_id: int | None  # before every document; None when the tokenizer adds none
    eos_id: int | None  # after every document

    def describe(self) -> str:
        bos = f"bos {self.bos_id} before each document" if self.bos_id is not None else "no bos (the tokenizer adds none)"
        eos = f"eos {self.eos_id} after each document" if self.eos_id is not None else "no eos"
        return f"document boundaries: {bos}, {eos}"

    def meta(self) -> dict:
        return {"bos_token_id": self.bos_id, "eos_token_id": self.eos_id}


def document_boundaries(tokenizer) -> DocumentBoundaries:
    """The tokenizer's convention, or one clear error when it has neither a bos nor an eos token."""
    bos = tokenizer.bos_token_id
    adds_bos = bos is not None and tokenizer("a", add_special_tokens=True)["input_ids"][:1] == [bos]
    eos = tokenizer.eos_token_id
    if eos is None:
        vocab = tokenizer.get_vocab()
        eos = next((vocab[t] for t in END_OF_TEXT_TOKENS if t in vocab), None)
    if eos is None and not adds_bos:
        raise UserInputError("the tokenizer has neither a bos nor an eos token (nor an end-of-text token such as "
                             "<|endoftext|>): documents could not be told apart; set eos_token in "
                             "tokenizer_config.json", where="--tokenizer_dir")
    return DocumentBoundaries(bos_id=bos if adds_bos else None, eos_id=eos)
