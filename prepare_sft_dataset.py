#!/usr/bin/env python
"""Stage 3 (SFT): jsonl conversations -> tokenized Arrow dataset with labels on assistant turns."""
import sys

sys.exit("error: prepare_sft_dataset.py is not implemented yet (issue: data preparation)")
