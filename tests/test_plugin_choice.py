"""--plugin auto: memory estimates against measured peaks, the choice, and train.py resolving it."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from benchmarks.train_benchmark import SHAPES
from colossal_llama2.training.plugin_choice import ModelShape, choose_plugin, estimate_peak_bytes
from tests.helpers.distributed import REPO_ROOT, run_distributed

GIB = 2**30


def shape(name: str) -> ModelShape:
    return ModelShape.of(SimpleNamespace(**SHAPES[name], tie_word_embeddings=False))


# (shape, plugin, GPUs, micro-batch, measured peak GiB at seq 4096, no grad-ckpt). The zero2
# rows at 7b_8l (40.77) and 7b are the library step's; 33.7 and the 7b_16l rows are the fused step's.
MEASURED = [("7b_8l", "zero2", 1, 1, 40.77), ("7b", "zero2", 2, 1, 73.4), ("1b", "ddp", 1, 1, 23.7),
            ("7b_8l", "gemini", 1, 1, 35.93), ("7b_8l", "zero2", 1, 1, 33.7), ("7b_16l", "zero2", 1, 1, 58.86),
            ("7b_16l", "zero2", 1, 2, 69.04)]


@pytest.mark.parametrize("name, plugin, gpus, micro_batch, peak_gib", MEASURED)
def test_estimates_cover_the_measured_peaks_without_wasting_much(name, plugin, gpus, micro_batch, peak_gib):
    estimate = estimate_peak_bytes(plugin, shape(name), gpus=gpus, tokens_per_micro_batch=4096 * micro_batch)
    assert 0.95 <= estimate / (peak_gib * GIB) <= 1.25, estimate / GIB


def test_shape_counts_parameters_like_the_model():
    assert shape("7b").params == 7_042_371_584
    tied = ModelShape.of(SimpleNamespace(**SHAPES["1b"], tie_word_embeddings=True))
    assert shape("1b").params - tied.params == SHAPES["1b"]["vocab_size"] * SHAPES["1b"]["hidden_size"]


def test_choice_is_the_fastest_that_fits():
    h200, h100 = 143.7e9, 85.0e9
    pick = lambda name, gpus, mem, **kw: choose_plugin(shape(name), cuda=True, gpus=gpus, device_bytes=mem,  # noqa
                                                      tokens_per_micro_batch=4096, **kw)[0]
    assert pick("1b", 1, h100) == "ddp"
    assert pick("7b", 2, h200) == "zero2"          # ddp would need 137 GB
    assert pick("7b", 2, h100) == "zero2_cpu"      # zero2 88 GB and gemini 81 GB exceed 90% of 85 GB
    assert pick("7b", 8, h100) == "zero2"
    assert pick("13b", 2, h200) == "zero2_cpu"
    assert pick("13b", 2, h200, grad_checkpoint=True) == "zero2"  # 127 GB: activations ~10x smaller
    plugin, why = choose_plugin(shape("7b"), cuda=False, gpus=2, device_bytes=0, tokens_per_micro_batch=4096)
    assert plugin == "ddp" and "CPU" in why
    plugin, why = choose_plugin(shape("7b"), cuda=True, gpus=1, device_bytes=16e9, tokens_per_micro_batch=4096)
    assert plugin == "gemini_auto" and "nothing fits" in why


def test_train_py_resolves_auto_and_logs_why(tmp_path, tiny_model_dir, tiny_tokenizer_dir):
    from tests.scripts.fixture_dataset import build_dataset

    data = build_dataset(tiny_tokenizer_dir, tmp_path / "data", max_length=64, num_parts=1)
    proc = run_distributed(REPO_ROOT / "train.py", [
        "--pretrained", tiny_model_dir, "--dataset", data, "--plugin", "auto", "--max_length", 64,
        "--micro_batch_size", 2, "--max_steps", 2, "--no_save", "--padding_mode", "longest",
        "--tensorboard_dir", tmp_path / "tb", "--config_file", tmp_path / "config.json"], nproc=2, timeout=240)
    assert "--plugin auto chose ddp: no CUDA GPU" in proc.stdout
    assert json.loads((tmp_path / "config.json").read_text())["plugin"] == "ddp"
