#!/usr/bin/env python
"""Stage 4: continual pre-training / SFT on a Colossal-AI Booster."""
import sys

sys.exit("error: train.py is not implemented yet (issue: trainer)")
