"""A model card (``README.md`` with YAML front matter, ``huggingface_hub.ModelCard``) in every model directory the
pipeline writes: ``init_model.py``'s output and every checkpoint's ``modeling/``, so a pushed model says what it is.

Front matter: ``base_model`` (the model the vocabulary was grown from, or trained from), ``language`` (when given),
``library_name: transformers``, ``pipeline_tag: text-generation`` and tags. The body: the vocabulary growth, the
training data (categories and samples), the training arguments, the last losses and evaluation results.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

CARD_FILE = "README.md"
TAGS = ["colossal-llama2", "continual-pretraining"]
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def base_model_of(model_dir: str | Path) -> str:
    """The model ``model_dir`` came from, for ``base_model``: what a card of ours there names (a grown or trained
    model keeps naming the original), else the Hub id its config.json records, else the directory's name."""
    from huggingface_hub import ModelCard

    model_dir = Path(model_dir)
    card = model_dir / CARD_FILE
    if card.is_file():
        try:
            data = ModelCard.load(card).data.to_dict()
        except Exception:  # a README that is not a card
            data = {}
        if TAGS[0] in (data.get("tags") or []) and data.get("base_model"):
            return data["base_model"]
    try:
        recorded = json.loads((model_dir / "config.json").read_text(encoding="utf-8")).get("_name_or_path", "")
    except (OSError, ValueError):
        recorded = ""
    if HUB_ID.fullmatch(recorded or ""):
        return recorded
    return model_dir.resolve().name


def write_card(directory: str | Path, *, base_model: str, title: str, sections: dict[str, list[str]],
               language: list[str] | None = None) -> Path:
    """``directory/README.md``: the front matter and one ``## heading`` per section (its lines as a list)."""
    from huggingface_hub import ModelCard, ModelCardData

    data = ModelCardData(base_model=base_model, language=language or None, library_name="transformers",
                         pipeline_tag="text-generation", tags=TAGS)
    body = [f"# {title}", ""]
    for heading, lines in sections.items():
        if lines:
            body += [f"## {heading}", "", *(f"- {line}" for line in lines), ""]
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body))
    path = Path(directory) / CARD_FILE
    card.save(str(path))
    return path


def arguments_lines(arguments: dict, keep: tuple[str, ...]) -> list[str]:
    return [f"`--{key}` {json.dumps(arguments[key]) if not isinstance(arguments[key], str) else arguments[key]}"
            for key in keep if arguments.get(key) not in (None, False)]


def language_of(model_dir: str | Path) -> list[str] | None:
    """The ``language`` a card of ours in ``model_dir`` names, carried on to the models trained from it."""
    from huggingface_hub import ModelCard

    card = Path(model_dir) / CARD_FILE
    try:
        data = ModelCard.load(card).data.to_dict() if card.is_file() else {}
    except Exception:
        return None
    return data.get("language") if TAGS[0] in (data.get("tags") or []) else None
