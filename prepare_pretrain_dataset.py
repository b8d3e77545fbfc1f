#!/usr/bin/env python
"""Stage 3 (pretraining): jsonl corpora -> tokenized, spliced, category-binned Arrow dataset.

See docs/data_preparation.md. Example:
    python prepare_pretrain_dataset.py --data_input_dirs data/a,data/b --tokenizer_dir tok \
        --data_jsonl_output_dir out_jsonl --data_arrow_output_dir out_arrow --max_length 4096
"""
from functools import partial

from colossal_llama2.dataset.prepare import main
from colossal_llama2.utils.errors import run_cli

if __name__ == "__main__":
    run_cli(partial(main, "pretrain"))
