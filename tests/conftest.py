"""Shared fixtures: a tiny LLaMA-2-like tokenizer and model, built once per test session.

Nothing is downloaded: the tokenizer is trained on tests/data/english.txt (English only, so Chinese is
covered by byte fallback exactly as in LLaMA-2) and the model is random.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATA_DIR = Path(__file__).parent / "data"


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def pytest_configure(config):
    """GPU runs: build (or load from ~/.cache/colossalai) the Adam kernels every train.py launch needs, once,
    here in the controlling process, before the tests' launches (parallel under pytest-xdist) only load them."""
    if "gpu" in (config.option.markexpr or "") and not hasattr(config, "workerinput") and _cuda_available():
        from colossalai.kernel.kernel_loader import CPUAdamLoader, FusedOptimizerLoader

        CPUAdamLoader().load()
        FusedOptimizerLoader().load()


def pytest_collection_modifyitems(config, items):
    if _cuda_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU (pytest -m gpu on a machine with one)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA_DIR


@pytest.fixture(scope="session")
def english_lines() -> list[str]:
    return (DATA_DIR / "english.txt").read_text(encoding="utf-8").splitlines()


@pytest.fixture(scope="session")
def chinese_lines() -> list[str]:
    return (DATA_DIR / "chinese.txt").read_text(encoding="utf-8").splitlines()


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    """LLaMA-2-like sentencepiece BPE tokenizer dir (tokenizer.model + configs), 600 pieces."""
    from colossal_llama2.tiny_base import build_tiny_tokenizer

    return build_tiny_tokenizer([DATA_DIR / "english.txt"], tmp_path_factory.mktemp("tiny_tokenizer"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    """Random untied tiny LlamaForCausalLM (safetensors) with the tokenizer files beside it."""
    from colossal_llama2.tiny_base import build_tiny_llama

    return build_tiny_llama(tiny_tokenizer_dir, tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="session")
def tiny_tied_model_dir(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    """Like ``tiny_model_dir`` but with tied input/output embeddings."""
    from colossal_llama2.tiny_base import build_tiny_llama

    return build_tiny_llama(tiny_tokenizer_dir, tmp_path_factory.mktemp("tiny_tied_model"), tie_word_embeddings=True)


@pytest.fixture(scope="session")
def llama3_tokenizer_dir(tmp_path_factory) -> Path:
    """LLaMA-3-like byte-level BPE tokenizer dir (tokenizer.json only): bos by post-processor, 1,000 BPE tokens +
    5 specials, trained on English only (Chinese is raw bytes, as for an English base)."""
    from colossal_llama2.tiny_base import build_byte_level_tokenizer

    return build_byte_level_tokenizer([DATA_DIR / "english.txt"], tmp_path_factory.mktemp("llama3_tok"), "llama3")


@pytest.fixture(scope="session")
def qwen2_tokenizer_dir(tmp_path_factory) -> Path:
    """Qwen2-like byte-level BPE tokenizer dir: no bos token, NFC, ChatML, vocab.json/merges.txt beside."""
    from colossal_llama2.tiny_base import build_byte_level_tokenizer

    return build_byte_level_tokenizer([DATA_DIR / "english.txt"], tmp_path_factory.mktemp("qwen2_tok"), "qwen2")
