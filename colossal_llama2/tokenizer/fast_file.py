"""Write ``tokenizer.json`` for an extended sentencepiece tokenizer, so that fast = slow = sentencepiece.

Without a ``tokenizer.json`` transformers converts ``tokenizer.model`` on every load (seconds at 69k pieces)
and the conversion is not exact in one place we can fix: with ``"legacy": false`` (what LLaMA-2 ships) the
converted fast tokenizer prepends the dummy ``▁`` through ``Metaspace(prepend_scheme="first")``, which
skips the prefix when the text already starts with a space. So ``" it"`` becomes ``▁it`` in the fast
tokenizer and ``▁▁ it`` in the slow one and in sentencepiece. Here the written file keeps the converter's
vocabulary, merges (ordered by score, which ``sp_surgery`` keeps distinct in float32), pre-tokenizer and
decoder, and adds a normalizer that gives a text starting with a space (or ``▁``) its own extra ``▁`` --
applied once to the whole input, not to each stretch between special tokens, which is why the special
tokens are marked ``normalized`` (their text is unchanged by that normalizer, so they still match).
Legacy tokenizers (``"legacy": true`` or no ``legacy`` key) are already exact and are written as converted.

Tokens added later with ``add_special_tokens`` (``normalized=False``) split the input before normalization;
text right after such a token that starts with a space then gets one ``▁`` too many. Add new tokens with
``normalized=True`` (the default for non-special tokens) to keep exactness.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..utils.errors import UserInputError
from ..utils.logging import get_logger

logger = get_logger(__name__)

FAST_FILE = "tokenizer.json"
SPACE_SYMBOL = "\u2581"
# A text's leading space or "▁" gets the dummy prefix like any other text (sentencepiece adds it always).
LEADING_SPACE_NORMALIZER = {
    "type": "Sequence",
    "normalizers": [
        {"type": "Replace", "pattern": {"Regex": f"\\A{SPACE_SYMBOL}"}, "content": SPACE_SYMBOL * 2},
        {"type": "Replace", "pattern": {"Regex": "\\A "}, "content": SPACE_SYMBOL + " "},
    ],
}
LLAMA_CLASSES = ("LlamaTokenizer", "LlamaTokenizerFast", None)


def load_slow(tokenizer_dir: Path):
    from transformers import LlamaTokenizer

    try:
        return LlamaTokenizer.from_pretrained(str(tokenizer_dir))
    except Exception as err:  # transformers raises many kinds; all mean "not a usable sentencepiece dir"
        raise UserInputError(f"cannot load it as a LlamaTokenizer: {err}", where=str(tokenizer_dir)) from None


def fast_files(tokenizer_dir: Path) -> dict[str, bytes] | None:
    """``{"tokenizer.json": ..., "tokenizer_config.json": ...}`` for the sentencepiece tokenizer in ``tokenizer_dir``.

    None when the directory's ``tokenizer_class`` is not LLaMA's (transformers then converts as it does).
    """
    from transformers.convert_slow_tokenizer import convert_slow_tokenizer

    config_path = tokenizer_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if config.get("tokenizer_class") not in LLAMA_CLASSES:
        logger.warning("tokenizer_class %r is not LLaMA's: no tokenizer.json written (transformers will convert "
                       "tokenizer.model itself)", config.get("tokenizer_class"))
        return None
    if config.get("add_prefix_space", True) is not True:
        logger.warning("add_prefix_space is %r: no tokenizer.json written (transformers will convert tokenizer.model "
                       "itself)", config["add_prefix_space"])
        return None
    # LlamaTokenizerFast ignores tokenizer.json whenever add_prefix_space is set; True is the default anyway.
    config.pop("add_prefix_space", None)
    slow = load_slow(tokenizer_dir)
    spec = json.loads(convert_slow_tokenizer(slow).to_str())
    if not slow.legacy:
        _make_leading_space_exact(spec, config)
    return {FAST_FILE: json.dumps(spec, ensure_ascii=False, indent=2).encode("utf-8"),
            "tokenizer_config.json": (json.dumps(config, ensure_ascii=False, indent=2) + "\n").encode("utf-8")}


def _make_leading_space_exact(spec: dict, config: dict) -> None:
    if spec.get("normalizer") is not None:  # the non-legacy LLaMA conversion has none; anything else: leave it
        logger.warning("unexpected normalizer in the converted tokenizer; leading spaces stay as transformers has them")
        return
    clashing = [t["content"] for t in spec["added_tokens"] if t["content"].startswith((" ", SPACE_SYMBOL))]
    if clashing:
        logger.warning("added tokens %s start with a space: leading spaces stay as transformers has them", clashing)
        return
    spec["normalizer"] = LEADING_SPACE_NORMALIZER
    for token in spec["added_tokens"]:
        token["normalized"] = True
    # transformers re-adds the tokens of tokenizer_config.json whose flags differ from tokenizer.json's.
    for token in (config.get("added_tokens_decoder") or {}).values():
        token["normalized"] = True


def unreachable_pieces(tokenizer_dir: Path, pieces: list[str]) -> list[str]:
    """Pieces that the fast tokenizer's BPE model does not produce from their own text alone."""
    from tokenizers import Tokenizer

    model = Tokenizer.from_file(str(tokenizer_dir / FAST_FILE)).model
    return [piece for piece in pieces if [t.value for t in model.tokenize(piece)] != [piece]]
