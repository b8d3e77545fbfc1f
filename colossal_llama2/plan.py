"""Before launching: every plugin's estimated peak GPU memory and speed class for a model, and what
``train.py --plugin auto`` would pick (the same code). Reads config.json only, no weights.

    python -m colossal_llama2.plan --pretrained llama-3-8b --gpus 1 --gpu_memory_gib 139.7 \\
        --micro_batch_size 1 --max_length 4096 --grad_ckpt
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from colossal_llama2.training.optim import OPTIMIZERS
from colossal_llama2.training.plugins.choice import ModelShape, plan_table
from colossal_llama2.utils.errors import UserInputError, run_cli
from colossal_llama2.utils.remote_code import refuse_remote_code

GIB = 2**30


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--pretrained", required=True, help="Hugging Face model dir (only its config.json is read)")
    p.add_argument("--gpus", type=int, default=1, help="data-parallel GPUs the run will use")
    p.add_argument("--gpu_memory_gib", type=float, default=None,
                   help="memory of each GPU in GiB (default: the smallest visible GPU's; required without one)")
    p.add_argument("--micro_batch_size", type=int, default=1, help="samples per GPU per forward")
    p.add_argument("--max_length", type=int, default=4096, help="tokens per sample")
    p.add_argument("--grad_ckpt", action="store_true", help="with --use_grad_checkpoint")
    p.add_argument("--optimizer", default="adamw", choices=OPTIMIZERS,
                   help="train.py --optimizer: how AdamW keeps its states (the choice is made for this one)")
    return p


def _device_bytes(gib: float | None) -> float:
    if gib is not None:
        if gib <= 0:
            raise UserInputError("must be positive", where="--gpu_memory_gib")
        return gib * GIB
    import torch

    if not torch.cuda.is_available():
        raise UserInputError("no GPU visible here: give the GPUs' memory", where="--gpu_memory_gib")
    return min(torch.cuda.get_device_properties(i).total_memory for i in range(torch.cuda.device_count()))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config_path = Path(args.pretrained) / "config.json"
    if not config_path.is_file():
        raise UserInputError(f"{args.pretrained} has no config.json", where="--pretrained")
    for flag in ("gpus", "micro_batch_size", "max_length"):
        if getattr(args, flag) < 1:
            raise UserInputError("must be at least 1", where=f"--{flag}")
    from transformers import AutoConfig

    refuse_remote_code(args.pretrained, "--pretrained", tokenizer=False)
    shape = ModelShape.of(AutoConfig.from_pretrained(str(args.pretrained), trust_remote_code=False))
    print("\n".join(plan_table(shape, gpus=args.gpus, device_bytes=_device_bytes(args.gpu_memory_gib),
                               tokens_per_micro_batch=args.micro_batch_size * args.max_length,
                               grad_checkpoint=args.grad_ckpt, optimizer=args.optimizer)))
    return 0


if __name__ == "__main__":
    run_cli(main)
