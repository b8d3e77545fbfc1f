"""Model and tokenizer directories whose classes exist only as code shipped beside the files: refused up front.

A ``config.json`` or ``tokenizer_config.json`` may name its classes through ``auto_map`` (InternLM2's and
Baichuan2's do). Where transformers has no class of its own for them, loading would run that code: transformers
then asks ``Do you wish to run the custom code? [y/N]`` on a terminal, or fails with a paragraph. This toolkit never
runs remote code, so such a directory is one line naming the file, before any stage starts; every
``from_pretrained`` also passes ``trust_remote_code=False`` so that no prompt can appear.
"""
from __future__ import annotations

import json
from pathlib import Path

from .errors import UserInputError

TOKENIZER_ADVICE = ("if its tokenizer.json is complete, set \"tokenizer_class\": \"PreTrainedTokenizerFast\" and "
                    "remove \"auto_map\" in a copy of the directory")
MODEL_ADVICE = "start from a checkpoint of a family transformers has built in"


def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # absent or unreadable: the loader that needs it says so in its own words
    return data if isinstance(data, dict) else {}


def _auto_map(data: dict, key: str):
    auto_map = data.get("auto_map")
    return auto_map.get(key) if isinstance(auto_map, dict) else None


def _known_tokenizer_class(name: str) -> bool:
    from transformers.models.auto.tokenization_auto import tokenizer_class_from_name

    return any(tokenizer_class_from_name(n) is not None for n in (name, f"{name}Fast"))


def _known_model_type(model_type) -> bool:
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    return model_type in CONFIG_MAPPING_NAMES


def tokenizer_needs_remote_code(directory: str | Path) -> str | None:
    """Why loading ``directory``'s tokenizer would run code shipped with it, or None."""
    path = Path(directory) / "tokenizer_config.json"
    config = _json(path)
    remote = _auto_map(config, "AutoTokenizer")
    if remote is None:
        return None
    name = config.get("tokenizer_class")
    if isinstance(name, str) and _known_tokenizer_class(name):
        return None
    if name is None and _known_model_type(_json(Path(directory) / "config.json").get("model_type")):
        return None
    return f"{path}: tokenizer class {name!r} exists only as code shipped with the files (auto_map {remote})"


def model_needs_remote_code(directory: str | Path) -> str | None:
    """Why loading ``directory``'s config or model would run code shipped with it, or None."""
    path = Path(directory) / "config.json"
    config = _json(path)
    if not isinstance(config.get("auto_map"), dict) or _known_model_type(config.get("model_type")):
        return None
    return (f"{path}: model type {config.get('model_type')!r} exists only as code shipped with the files "
            f"(auto_map {config['auto_map']})")


def refuse_remote_code(directory: str | Path, where: str, *, tokenizer: bool = True, model: bool = True) -> None:
    """Raise ``UserInputError`` (one line) if loading ``directory`` would run code shipped with it."""
    checks = ([(tokenizer_needs_remote_code, TOKENIZER_ADVICE)] if tokenizer else []) + \
             ([(model_needs_remote_code, MODEL_ADVICE)] if model else [])
    for needs_remote_code, advice in checks:
        reason = needs_remote_code(directory)
        if reason:
            raise UserInputError(f"{reason}; this toolkit never runs a model's own code: {advice}", where=where)
