"""Colossal-LLaMA-2: adapt LLaMA-family models to a new language or domain by continual pre-training.

Stages (each a module plus a thin script, joined by directories on disk):
  tokenizer/  extend a sentencepiece vocabulary          -> tokenizer dir
  model/      grow embedding and lm_head                 -> HF model dir
  dataset/    jsonl -> tokenized, spliced, binned Arrow  -> dataset dir
  training/   Colossal-AI Booster training pieces         -> checkpoints
"""
__version__ = "0.1.0"
