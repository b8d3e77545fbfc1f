"""The Hugging Face files that travel with a tokenizer (sentencepiece or byte-level BPE), and checks on them."""
from __future__ import annotations

import json
from pathlib import Path

from ..utils.errors import UserInputError
from ..utils.remote_code import refuse_remote_code

SP_MODEL_FILE = "tokenizer.model"
REQUIRED_FILES = (SP_MODEL_FILE, "tokenizer_config.json")
# Copied when present. transformers 5 writes no special_tokens_map.json (tokenizer_config.json names the tokens).
OPTIONAL_FILES = ("special_tokens_map.json", "chat_template.jinja", "chat_template.json")
# Written by init_tokenizer for the extended vocabulary; a source's own is never copied (it encodes the *old*
# vocabulary and would shadow the new one), an extended tokenizer's travels on to the model dir.
FAST_FILE = "tokenizer.json"
# A BPE base given as its tokenizer.json (byte-level: LLaMA-3, Qwen2/3, Mistral-Nemo; sentencepiece-style: LLaMA-2
# or Mistral converted, Gemma); these travel beside it.
BYTE_LEVEL_REQUIRED = (FAST_FILE, "tokenizer_config.json")
BYTE_LEVEL_OPTIONAL = ("added_tokens.json",) + OPTIONAL_FILES
SLOW_BPE_FILES = ("vocab.json", "merges.txt")  # rewritten for the extended vocabulary when the base has them

SENTENCEPIECE = "sentencepiece"
BPE_JSON = "BPE tokenizer.json"


def tokenizer_kind(path: str | Path, flag: str) -> str:
    """``SENTENCEPIECE`` (a tokenizer.model) or ``BPE_JSON`` (a BPE tokenizer.json only); else one clear error."""
    from .bpe_surgery import describe_unsupported

    path = Path(path)
    if not path.is_dir():
        raise UserInputError(f"{path} is not a directory", where=flag)
    refuse_remote_code(path, flag, model=False)  # the model, where a stage needs one, is checked by that stage
    if (path / SP_MODEL_FILE).is_file():
        check_tokenizer_dir(path, flag)
        return SENTENCEPIECE
    if not (path / FAST_FILE).is_file():
        raise UserInputError(f"{path} has neither {SP_MODEL_FILE} (sentencepiece) nor {FAST_FILE} (BPE)",
                             where=flag)
    try:
        data = json.loads((path / FAST_FILE).read_text(encoding="utf-8"))
    except ValueError as err:
        raise UserInputError(f"{path / FAST_FILE} is not a tokenizers JSON file ({err})", where=flag) from None
    why = describe_unsupported(data)
    if why:
        raise UserInputError(f"{path / FAST_FILE}: {why}", where=flag)
    _require_files(path, BYTE_LEVEL_REQUIRED, "a BPE", flag)
    return BPE_JSON


def _require_files(path: Path, names: tuple[str, ...], kind: str, flag: str) -> None:
    missing = [name for name in names if not (path / name).is_file()]
    if missing:
        raise UserInputError(f"{path} lacks {', '.join(missing)} ({kind} tokenizer dir has {', '.join(names)})",
                             where=flag)


def read_byte_level_files(path: Path) -> dict[str, bytes]:
    """The files of a BPE tokenizer.json dir, ``tokenizer.json`` and the slow files included."""
    names = BYTE_LEVEL_REQUIRED + BYTE_LEVEL_OPTIONAL + SLOW_BPE_FILES
    return {name: (path / name).read_bytes() for name in names if (path / name).is_file()}


def check_tokenizer_dir(path: str | Path, flag: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise UserInputError(f"{path} is not a directory", where=flag)
    _require_files(path, REQUIRED_FILES, "a LLaMA-style", flag)
    return path


def read_tokenizer_files(path: Path, include_fast: bool = False) -> dict[str, bytes]:
    """The tokenizer files of ``path`` as bytes (``tokenizer.json`` only with ``include_fast``)."""
    names = REQUIRED_FILES + OPTIONAL_FILES + ((FAST_FILE,) if include_fast else ())
    return {name: (path / name).read_bytes() for name in names if (path / name).is_file()}


def write_files(out_dir: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (out_dir / name).write_bytes(data)


def check_no_added_tokens_beyond(path: Path, sp_size: int, flag: str) -> None:
    """Refuse HF-added tokens with ids >= the sentencepiece size: the new pieces would take their ids."""
    beyond: dict[str, int] = {}
    config = json.loads((path / "tokenizer_config.json").read_text(encoding="utf-8"))
    for token_id, token in (config.get("added_tokens_decoder") or {}).items():
        if int(token_id) >= sp_size:
            beyond[token.get("content", "?")] = int(token_id)
    added = path / "added_tokens.json"
    if added.is_file():
        for content, token_id in json.loads(added.read_text(encoding="utf-8")).items():
            if int(token_id) >= sp_size:
                beyond[content] = int(token_id)
    if beyond:
        listed = ", ".join(f"{c!r}={i}" for c, i in sorted(beyond.items(), key=lambda kv: kv[1]))
        raise UserInputError(
            f"{path} has tokens added on top of the sentencepiece vocabulary ({listed}); appended pieces "
            f"would take those ids. Remove them from tokenizer_config.json/added_tokens.json first and add "
            f"them again after the extension.", where=flag)


def check_fast_file_matches(path: Path, sp_size: int, flag: str) -> None:
    """Refuse a ``tokenizer.json`` whose vocabulary is not ``tokenizer.model``'s (e.g. copied from the source)."""
    fast = path / FAST_FILE
    if not fast.is_file():
        return
    try:
        vocab = json.loads(fast.read_text(encoding="utf-8"))["model"]["vocab"]
    except (ValueError, KeyError, TypeError) as err:
        raise UserInputError(f"{fast} is not a tokenizers file ({err})", where=flag) from None
    if len(vocab) != sp_size:
        raise UserInputError(f"{fast} has {len(vocab)} pieces but tokenizer.model {sp_size}: it belongs to another "
                             f"vocabulary (delete it; transformers then converts tokenizer.model)", where=flag)


def save_tokenizer(tokenizer, out_dir: Path) -> None:
    """``tokenizer.save_pretrained`` plus its source's ``tokenizer.model``: transformers 5 writes tokenizer.json and
    tokenizer_config.json only, and a sentencepiece model dir without its model file cannot be extended again
    (nor converted by tools that read sentencepiece)."""
    import shutil

    tokenizer.save_pretrained(str(out_dir))
    source = Path(tokenizer.name_or_path or "") / SP_MODEL_FILE
    if source.is_file() and not (Path(out_dir) / SP_MODEL_FILE).exists():
        shutil.copy2(source, Path(out_dir) / SP_MODEL_FILE)
