#!/usr/bin/env python
"""Stage 4: continual pre-training / SFT on a Colossal-AI Booster.

    colossalai run --nproc_per_node 8 --hostfile hostfile train.py --pretrained MODEL --dataset DATA/part-* ...

See docs/training.md for every flag, the checkpoint layout and how to resume.
"""
from colossal_llama2.training.main import main
from colossal_llama2.utils.errors import run_cli

if __name__ == "__main__":
    run_cli(main)
