"""``colossal-llama2 <stage> [flags]``: every stage of the pipeline behind one command.

    colossal-llama2 extend-tokenizer --source_tokenizer_dir BASE --target_tokenizer_dir TOK --train_corpus zh/ ...
    colossal-llama2 init-model --source_model_and_tokenizer_path BASE --target_tokenizer_path TOK ...
    colossal-llama2 prepare-pretrain --data_input_dirs in --tokenizer_dir MODEL --data_arrow_output_dir arrow ...
    colossal-llama2 prepare-sft ...
    colossal-llama2 train ...             (one process; for several: torchrun -m colossal_llama2 train ...)
    colossal-llama2 plan --pretrained MODEL --gpus 8 --gpu_memory_gib 80
    colossal-llama2 chat --model_path save_dir/epoch-0_step-100/modeling
    colossal-llama2 generate --model_path ... --input_txt "..."

``python -m colossal_llama2 <stage>`` is the same. Each stage takes the flags of its script (``--help``).
"""
from __future__ import annotations

import importlib
import sys
from functools import partial
from typing import Callable, Sequence

from .utils.errors import run_cli

# stage -> (module, entry point, what it does)
STAGES = {
    "extend-tokenizer": ("colossal_llama2.tokenizer.init_tokenizer", "main", "stage 1: extend a vocabulary"),
    "init-model": ("colossal_llama2.model.init_model", "main", "stage 2: grow embeddings and lm_head"),
    "prepare-pretrain": ("colossal_llama2.dataset.prepare", "main:pretrain", "stage 3: pretraining data"),
    "prepare-sft": ("colossal_llama2.dataset.prepare", "main:sft", "stage 3: SFT data"),
    "train": ("colossal_llama2.training.main", "main", "stage 4: train (under torchrun/colossalai run: -m)"),
    "plan": ("colossal_llama2.plan", "main", "each plugin's estimated memory and what --plugin auto picks"),
    "chat": ("colossal_llama2.inference", "chat_main", "stage 5: interactive chat, streamed"),
    "generate": ("colossal_llama2.inference", "generate_main", "stage 5: continue a prompt"),
}


def entry_point(stage: str) -> Callable[[Sequence[str] | None], int]:
    module, name, _ = STAGES[stage]
    name, _, kind = name.partition(":")
    function = getattr(importlib.import_module(module), name)
    return partial(function, kind) if kind else function


def usage() -> str:
    width = max(map(len, STAGES))
    return "usage: colossal-llama2 <stage> [flags]\n\nstages:\n" + "\n".join(
        f"  {stage:<{width}}  {what}" for stage, (_, _, what) in STAGES.items())


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] not in STAGES:
        print(f"error: unknown stage {argv[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    sys.argv[0] = f"colossal-llama2 {argv[0]}"
    return entry_point(argv[0])(argv[1:])


def console() -> None:
    """The ``colossal-llama2`` console script."""
    run_cli(main)
