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

from ..utils.stack import transformers_5
from .hf_files import SP_MODEL_FILE
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


LEGACY_NORMALIZER = {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": SPACE_SYMBOL},
                                                          {"type": "Replace", "pattern": {"String": " "},
                                                           "content": SPACE_SYMBOL}]}
NON_LEGACY_PRE_TOKENIZER = {"type": "Metaspace", "replacement": SPACE_SYMBOL, "prepend_scheme": "first",
                            "split": False}
DECODER = {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": SPACE_SYMBOL}, "content": " "},
                                            {"type": "ByteFallback"}, {"type": "Fuse"},
                                            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}


def converted_spec(tokenizer_dir: Path, config: dict) -> tuple[dict, bool]:
    """``tokenizer.model`` as a tokenizers JSON spec, the way transformers 4's LLaMA converter writes it, and whether
    it is legacy (sentencepiece LLaMA tokenizers without a "legacy" key are: transformers 4 says so and keeps it).

    Built here from the sentencepiece model rather than by transformers: 5 has no slow tokenizer to convert, and its
    own conversion ranks BPE merges by piece id instead of score, which splits runs of spaces unlike
    sentencepiece. ``tests/test_tokenizer_exactness.py`` checks this equals transformers 4's conversion."""
    from .sp_surgery import parse_model

    proto = parse_model((tokenizer_dir / SP_MODEL_FILE).read_bytes(), where=str(tokenizer_dir / SP_MODEL_FILE))
    legacy = config.get("legacy") is not False
    scores = [(piece.piece, 0.0 if i < 3 else piece.score) for i, piece in enumerate(proto.pieces)]
    if proto.trainer_spec.model_type == 1:  # unigram
        model = {"type": "Unigram", "unk_id": 0, "vocab": [list(item) for item in scores], "byte_fallback": True}
    else:
        vocab = {piece: i for i, (piece, _) in enumerate(scores)}
        model = {"type": "BPE", "dropout": None, "unk_token": proto.trainer_spec.unk_piece,
                 "continuing_subword_prefix": None, "end_of_word_suffix": None, "fuse_unk": True,
                 "byte_fallback": True, "ignore_merges": False, "vocab": vocab, "merges": _merges_by_score(vocab, scores)}
    # control pieces (<s>, </s>) and user-defined ones are added tokens; only the control ones are special
    added = [{"id": i, "content": piece.piece, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": piece.type == 3}
             for i, piece in enumerate(proto.pieces) if piece.type in (3, 4)]
    spec = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
            "normalizer": LEGACY_NORMALIZER if legacy else None,
            "pre_tokenizer": None if legacy else NON_LEGACY_PRE_TOKENIZER,
            "post_processor": None, "decoder": DECODER, "model": model}
    return json.loads(json.dumps(spec)), legacy  # nothing shared with the constants above


def _merges_by_score(vocab: dict[str, int], scores: list[tuple[str, float]]) -> list[list[str]]:
    """Every split of every piece into two pieces, highest merged score first; ties: shorter left, then right side,
    then the pieces' ids (sentencepiece's BPE applies the best-scored merge first)."""
    merges = []
    for merged, score in scores:
        local = [(merged[:k], merged[k:], score) for k in range(1, len(merged))
                 if merged[:k] in vocab and merged[k:] in vocab]
        merges.extend(sorted(local, key=lambda m: (vocab[m[0]], vocab[m[1]])))
    merges.sort(key=lambda m: (m[2], len(m[0]), len(m[1])), reverse=True)  # stable: ties keep the order above
    return [[left, right] for left, right, _ in merges]


def fast_files(tokenizer_dir: Path) -> dict[str, bytes] | None:
    """``{"tokenizer.json": ..., "tokenizer_config.json": ...}`` for the sentencepiece tokenizer in ``tokenizer_dir``.

    None when the directory's ``tokenizer_class`` is not LLaMA's (transformers then converts as it does).
    """
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
    spec, legacy = converted_spec(tokenizer_dir, config)
    if not legacy:
        _make_leading_space_exact(spec, config)
    if transformers_5():
        _load_as_written(spec, config)
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


def _load_as_written(spec: dict, config: dict) -> None:
    """transformers 5's LlamaTokenizer rebuilds its pipeline from the vocabulary and merges alone, dropping the
    normalizer above; ``PreTrainedTokenizerFast`` (its generic class, in 4 too) loads tokenizer.json as written. bos
    and eos then come from a post-processor in the file, as in LLaMA-2's own tokenizer.json."""
    from tokenizers import Tokenizer, processors

    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    tokenizer = Tokenizer.from_str(json.dumps(spec))
    ends = [(_token_text(config.get(f"{end}_token")), config.get(f"add_{end}_token", default))
            for end, default in (("bos", True), ("eos", False))]
    (bos, add_bos), (eos, add_eos) = ends

    def template(sequence: str, type_id: int) -> str:
        return " ".join([f"{bos}:{type_id}"] * add_bos + [f"${sequence}:{type_id}"] + [f"{eos}:{type_id}"] * add_eos)

    tokenizer.post_processor = processors.TemplateProcessing(
        single=template("A", 0), pair=f"{template('A', 0)} {template('B', 1)}",
        special_tokens=[(text, tokenizer.token_to_id(text)) for text, add in ends if add])
    spec["post_processor"] = json.loads(tokenizer.to_str())["post_processor"]


def _token_text(token) -> str | None:
    return token.get("content") if isinstance(token, dict) else token


def unreachable_pieces(tokenizer_dir: Path, pieces: list[str]) -> list[str]:
    """Pieces that the fast tokenizer's BPE model does not produce from their own text alone."""
    from tokenizers import Tokenizer

    model = Tokenizer.from_file(str(tokenizer_dir / FAST_FILE)).model
    return [piece for piece in pieces if [t.value for t in model.tokenize(piece)] != [piece]]
