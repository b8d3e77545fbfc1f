"""Tied input/output embeddings (small Qwen2/2.5/3, Gemma-style models) through every plugin's save and load.

Colossal-AI's checkpoint IO writes every name of the state dict: a tied model's ``lm_head.weight`` and
``model.embed_tokens.weight`` are one tensor, which safetensors refuses to write twice when they share memory
(on CPU) and which would otherwise be stored twice. ``saving_tied_once`` drops the tied names from what is
written and from the shard index, so ``modeling/`` holds the matrix once, as ``save_pretrained`` writes it,
and transformers ties it again on load. ``load_strictness`` lets the loader accept exactly those names as
missing (the tie fills them), and ``check_still_tied`` guards the invariant after a load.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Iterator

import torch

from ...utils.logging import get_logger

logger = get_logger(__name__)


def tied_names(model: torch.nn.Module) -> set[str]:
    """Names of parameters that are the same tensor as an earlier-named one (e.g. ``{"lm_head.weight"}``)."""
    first: dict[int, str] = {}
    tied = set()
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in first:
            tied.add(name)
        else:
            first[id(param)] = name
    return tied


@contextlib.contextmanager
def saving_tied_once(tied: set[str], index_dir: str | Path, is_writer: bool) -> Iterator[None]:
    """Inside: colossalai's state-dict writer leaves out ``tied``; after: the shard index forgets them too."""
    if not tied:
        yield
        return
    import colossalai.checkpoint_io.utils as io_utils

    original = io_utils.save_state_dict

    def save_state_dict(state_dict, checkpoint_file_path, use_safetensors):
        if isinstance(state_dict, dict) and any(isinstance(k, str) for k in state_dict):
            state_dict = {k: v for k, v in state_dict.items() if k not in tied}
        return original(state_dict, checkpoint_file_path, use_safetensors)

    io_utils.save_state_dict = save_state_dict
    try:
        yield
    finally:
        io_utils.save_state_dict = original
    if is_writer:
        for index in Path(index_dir).glob("*.index.json"):
            data = json.loads(index.read_text(encoding="utf-8"))
            data["weight_map"] = {k: v for k, v in data.get("weight_map", {}).items() if k not in tied}
            index.write_text(json.dumps(data, indent=2), encoding="utf-8")


def check_still_tied(model: torch.nn.Module, tied: set[str]) -> None:
    """After a load: the tied names must still be the same tensors (a load that broke the tie trains two)."""
    if tied and tied_names(model) != tied:
        raise RuntimeError(f"loading broke the tied weights {sorted(tied)}")
