"""The reference a fast sentencepiece tokenizer is checked against.

transformers 4 has the slow ``LlamaTokenizer`` (sentencepiece underneath, special tokens split out first); transformers
5 has no slow tokenizers, so there the reference is sentencepiece itself behind the same few methods the tests call.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from colossal_llama2.utils.stack import transformers_5

SPACE = "\u2581"


class SentencePieceReference:
    """transformers 4's slow LlamaTokenizer rebuilt on sentencepiece: special tokens split out first; legacy encodes
    every stretch between them with the dummy prefix, non-legacy only the text's start (a "▁" counts as a space)."""

    def __init__(self, directory: str | Path):
        import sentencepiece as spm
        from sentencepiece import sentencepiece_model_pb2 as sp_pb2

        directory = Path(directory)
        model = (directory / "tokenizer.model").read_bytes()
        self.sp = spm.SentencePieceProcessor(model_proto=model)
        proto = sp_pb2.ModelProto.FromString(model)
        proto.normalizer_spec.add_dummy_prefix = False
        self.sp_no_prefix = spm.SentencePieceProcessor(model_proto=proto.SerializeToString())
        config = json.loads((directory / "tokenizer_config.json").read_text(encoding="utf-8"))
        self.add_bos = config.get("add_bos_token", True)
        self.legacy = config.get("legacy") is not False
        self.bos_token_id, self.eos_token_id, self.unk_token_id = self.sp.bos_id(), self.sp.eos_id(), self.sp.unk_id()
        self.specials = [self.sp.id_to_piece(i) for i in (self.unk_token_id, self.bos_token_id, self.eos_token_id)]
        self._split = re.compile("(" + "|".join(re.escape(t) for t in self.specials) + ")")

    def tokenize(self, text: str) -> list[str]:
        if not text:
            return []
        if not self.legacy:
            text = SPACE + text.replace(SPACE, " ")
        tokens = []
        for part in self._split.split(text):
            if part in self.specials:
                tokens.append(part)
            elif part:
                tokens += self._encode_part(part)
        if not self.legacy and len(tokens) > 1 and tokens[0] == SPACE and tokens[1] in self.specials:
            tokens = tokens[1:]
        return tokens

    def _encode_part(self, part: str) -> list[str]:
        if self.legacy:
            return self.sp.encode(part, out_type=str)
        if not part.startswith((SPACE, " ")):
            return self.sp_no_prefix.encode(part, out_type=str)
        unk = self.specials[0]  # what transformers 4 does: encode after "<unk>", then drop its pieces
        return self.sp_no_prefix.encode(unk + part, out_type=str)[len(self.sp_no_prefix.encode(unk)):]

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = [self.sp.piece_to_id(piece) for piece in self.tokenize(text)]
        return ([self.bos_token_id] if add_special_tokens and self.add_bos else []) + ids

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        return {"input_ids": self.encode(text, add_special_tokens)}

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        controls = {self.bos_token_id, self.eos_token_id}
        if skip_special_tokens:
            ids = [i for i in ids if i not in controls]
        return self.sp.decode(ids)

    def convert_tokens_to_ids(self, tokens):
        return self.sp.piece_to_id(tokens)

    def convert_ids_to_tokens(self, ids):
        return self.sp.id_to_piece(ids)

    def __len__(self) -> int:
        return self.sp.get_piece_size()


def slow_tokenizer(directory: str | Path):
    """transformers 4: the slow LlamaTokenizer; transformers 5: sentencepiece (see the module docstring)."""
    if transformers_5():
        return SentencePieceReference(directory)
    from transformers import LlamaTokenizer

    return LlamaTokenizer.from_pretrained(str(directory))
