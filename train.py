#!/usr/bin/env python
"""Stage 4: continual pre-training / SFT on a Colossal-AI Booster.

    colossalai run --nproc_per_node 8 --hostfile hostfile train.py --pretrained MODEL --dataset DATA/part-* ...

See docs/training.md for every flag, the checkpoint layout and how to resume.
"""
from __future__ import annotations

from typing import Sequence

from colossal_llama2.utils.errors import run_cli


def main(argv: Sequence[str] | None = None) -> int:
    from colossal_llama2.training.lifecycle.launcher import protect_output_streams

    protect_output_streams()  # a launcher killed mid-run must not make the next print fail the save
    from colossal_llama2.training.args import parse_args
    from colossal_llama2.training.loop import train

    return train(parse_args(argv), exit_process=True)


if __name__ == "__main__":
    run_cli(main)
