"""Colossal-LLaMA-2: adapt LLaMA-family models to a new language or domain by continual pre-training.

Stages (each a module plus a thin script, joined by directories on disk):
  tokenizer/  extend a sentencepiece vocabulary          -> tokenizer dir
  model/      grow embedding and lm_head                 -> HF model dir
  dataset/    jsonl -> tokenized, spliced, binned Arrow  -> dataset dir
  training/   Colossal-AI Booster training pieces         -> checkpoints
"""
__version__ = "0.1.0"

import os

# transformers 5 (which depends on the `kernels` package) swaps modules for kernels downloaded from the Hugging Face
# Hub whenever from_pretrained loads a model for a GPU: code fetched at run time (this project runs no remote code)
# that also fails on offline clusters. Off unless the user turns it on (USE_HUB_KERNELS=YES).
os.environ.setdefault("USE_HUB_KERNELS", "NO")

import warnings

# colossalai warns at import, on every rank, about optional extras for features this toolkit does not turn on:
# TensorNVMe for asynchronous checkpoint saving and apex for its shardformer's fused RMSNorm.
for _extra in ("Please install the latest tensornvme", "Please install apex from source"):
    warnings.filterwarnings("ignore", message=_extra, category=UserWarning)
