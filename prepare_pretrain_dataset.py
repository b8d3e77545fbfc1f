#!/usr/bin/env python
"""Stage 3 (pretraining): jsonl corpora -> tokenized, spliced, category-binned Arrow dataset."""
import sys

sys.exit("error: prepare_pretrain_dataset.py is not implemented yet (issue: data preparation)")
