#!/usr/bin/env python
"""Stage 5: generate text from a trained model with plain Hugging Face transformers."""
import sys

sys.exit("error: inference_example.py is not implemented yet (issue: inference and demo)")
