"""A tiny LLaMA-2-like base model, built locally as a stand-in for a downloaded one.

Tests and ``make demo`` cannot download LLaMA-2, so they build its miniature: a sentencepiece BPE
tokenizer of the same kind (byte fallback, ``<unk>``=0, ``<s>``=1, ``</s>``=2, digits split, no
normalisation, trained on English only so Chinese is covered only through byte fallback, as in LLaMA-2)
and a small random ``LlamaForCausalLM`` saved with ``save_pretrained`` (safetensors) beside it.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Iterable

from .utils.logging import get_logger

logger = get_logger(__name__)

TOKENIZER_FILES = ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json")


def train_llama_like_sentencepiece(lines: Iterable[str], vocab_size: int = 600) -> bytes:
    """Train a LLaMA-2-style sentencepiece BPE model on ``lines``; return the serialized model proto."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([line for line in lines if line.strip()]),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab_size,
        byte_fallback=True,
        split_digits=True,
        split_by_unicode_script=True,
        allow_whitespace_only_pieces=True,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        add_dummy_prefix=True,
        character_coverage=0.99995,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,  # deterministic output
        minloglevel=2,
    )
    return model.getvalue()


def save_llama_tokenizer(sp_model_bytes: bytes, out_dir: str | os.PathLike) -> Path:
    """Write ``tokenizer.model``, ``tokenizer_config.json``, ``special_tokens_map.json`` like LLaMA-2's."""
    from transformers import LlamaTokenizer

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / "tokenizer.model"
    model_path.write_bytes(sp_model_bytes)
    tokenizer = LlamaTokenizer(
        vocab_file=str(model_path),
        legacy=False,
        add_bos_token=True,
        add_eos_token=False,
        pad_token=None,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.save_pretrained(str(out_dir))
    return out_dir


def build_tiny_tokenizer(corpus_files: Iterable[str | os.PathLike], out_dir: str | os.PathLike,
                         vocab_size: int = 600) -> Path:
    lines: list[str] = []
    for path in corpus_files:
        lines.extend(Path(path).read_text(encoding="utf-8").splitlines())
    return save_llama_tokenizer(train_llama_like_sentencepiece(lines, vocab_size), out_dir)


def build_tiny_llama(tokenizer_dir: str | os.PathLike, out_dir: str | os.PathLike, *, hidden_size: int = 64,
                     intermediate_size: int = 176, num_hidden_layers: int = 2, num_attention_heads: int = 4,
                     num_key_value_heads: int = 2, max_position_embeddings: int = 1024,
                     tie_word_embeddings: bool = False, seed: int = 0, torch_dtype: str = "float32") -> Path:
    """Save a random ``LlamaForCausalLM`` sized to the tokenizer, with the tokenizer files copied in."""
    import shutil

    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=None,
        torch_dtype=torch_dtype,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(getattr(torch, torch_dtype))
    out_dir = Path(out_dir)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    for name in TOKENIZER_FILES:
        shutil.copy2(Path(tokenizer_dir) / name, out_dir / name)
    logger.info("tiny LLaMA: %d parameters, vocab %d -> %s", model.num_parameters(), config.vocab_size, out_dir)
    return out_dir
