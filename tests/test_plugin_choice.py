"""--plugin auto: memory estimates against measured peaks, the choice, and train.py resolving it."""
from __future__ import annotations

import json

import pytest

from benchmarks.train_benchmark import SHAPES, model_config
from colossal_llama2.training.plugins.choice import ModelShape, choose_plugin, estimate_peak_bytes
from tests.helpers.distributed import REPO_ROOT, run_distributed

GIB = 2**30


def shape(name: str) -> ModelShape:
    return ModelShape.of(model_config(name, 4096))


# (shape, plugin, GPUs, micro-batch, gradient checkpointing, measured peak GiB at seq 4096) with train.py's
# defaults; the 2-GPU 7b row is from colossalai's own zero2 step (the fused step allocates less, not more).
MEASURED = [("7b", "zero2", 1, 1, False, 109.1), ("7b_16l", "zero2", 1, 1, False, 58.86),
            ("7b_16l", "zero2", 1, 2, False, 69.04), ("7b_8l", "zero2", 1, 1, False, 33.7),
            ("llama3_8b", "zero2", 1, 1, True, 120.70), ("qwen2_7b", "zero2", 1, 1, True, 115.03),
            ("7b", "zero2", 2, 1, False, 73.4), ("1b", "ddp", 1, 1, False, 23.7),
            ("7b_8l", "gemini", 1, 1, False, 35.93), ("7b_16l", "gemini", 1, 1, False, 62.8)]


# zero2 with --optimizer adamw_bf16 (bf16 weights and states, no fp32 master weights), one H200
MEASURED += [("7b_8l", "zero2:adamw_bf16", 1, 1, False, 17.44), ("13b", "zero2:adamw_bf16", 1, 1, True, 100.76),
             ("7b_8l", "zero2:adamw8bit", 1, 1, False, 14.5), ("llama3_8b", "zero2", 1, 1, False, 123.84),
             ("llama3_8b", "zero2:adamw_bf16", 1, 1, False, 64.01), ("llama3_8b", "zero2:adamw8bit", 1, 1, False, 49.28)]
# zero2_cpu: bf16 weights and gradients on the GPU, the rest on the host
MEASURED += [("7b", "zero2_cpu", 1, 1, False, 30.91)]


@pytest.mark.parametrize("name, plugin, gpus, micro_batch, ckpt, peak_gib", MEASURED)
def test_estimates_are_within_ten_percent_of_the_measured_peaks(name, plugin, gpus, micro_batch, ckpt, peak_gib):
    plugin, _, optimizer = plugin.partition(":")
    estimate = estimate_peak_bytes(plugin, shape(name), gpus=gpus, tokens_per_micro_batch=4096 * micro_batch,
                                   grad_checkpoint=ckpt, optimizer=optimizer or "adamw")
    assert 0.95 <= estimate / (peak_gib * GIB) <= 1.10, estimate / (peak_gib * GIB)


def test_gemini_warns_where_zero2_fits():
    from colossal_llama2.training.plugins.choice import gemini_warning

    said = gemini_warning(shape("7b_16l"), gpus=1, device_bytes=H200, tokens_per_micro_batch=4096,
                          grad_checkpoint=False)
    assert said and "zero2" in said and "0.55x" in said
    assert gemini_warning(shape("13b"), gpus=1, device_bytes=H200, tokens_per_micro_batch=4096,
                          grad_checkpoint=False) is None  # zero2 does not fit: gemini is the right call


def test_shape_counts_parameters_like_the_model():
    assert shape("7b").params == 7_042_371_584
    tied = ModelShape.of(model_config("1b", 4096, tie_word_embeddings=True))
    assert shape("1b").params - tied.params == SHAPES["1b"]["vocab_size"] * SHAPES["1b"]["hidden_size"]


H200 = 143_771 * 2**20  # what torch reports for one H200 (139.7 GiB)
H100 = 81_559 * 2**20


def pick(name, gpus, memory, **kwargs):
    return choose_plugin(shape(name), cuda=True, gpus=gpus, device_bytes=memory, tokens_per_micro_batch=4096,
                         **kwargs)


def test_choice_is_the_fastest_that_fits():
    assert pick("1b", 1, H100)[0] == "zero2"         # ddp only on CPU
    assert pick("7b", 2, H200)[0] == "zero2"
    assert pick("7b", 8, H100)[0] == "zero2"
    plugin, why = pick("13b", 2, H200)                 # 140 GB by the estimate: zero2 within its margin, not offload
    assert plugin == "zero2" and "margin" in why
    assert pick("13b", 2, H100)[0] == "zero2_cpu"      # far over: offload
    assert pick("7b_16l", 1, H200)[0] == "zero2"
    plugin, why = choose_plugin(shape("7b"), cuda=False, gpus=2, device_bytes=0, tokens_per_micro_batch=4096)
    assert plugin == "ddp" and "CPU" in why
    plugin, why = choose_plugin(shape("7b"), cuda=True, gpus=1, device_bytes=16e9, tokens_per_micro_batch=4096)
    assert plugin == "gemini_auto" and "nothing fits" in why


def test_a_7b_model_on_one_h200_gets_zero2_not_an_offload_plugin():
    """Measured: zero2 runs 7b on one H200 at 109.1 GiB and 10,866 tokens/s; zero2_cpu, which the old estimate
    (17% high) chose, ran at 158. Near the limit the in-GPU plugin wins, with the flags to try if it runs out."""
    plugin, why = pick("7b", 1, H200)
    assert plugin == "zero2", why
    assert pick("llama3_8b", 1, H200, grad_checkpoint=True)[0] == "zero2"
    edge, why = pick("7b", 1, 128e9)  # estimate 120 GB: within 10% of 128 GB, above 92% of it
    assert edge == "zero2" and "margin" in why and "--use_grad_checkpoint" in why


def test_planner_prints_every_plugin_and_the_choice_last(tmp_path):
    from benchmarks.train_benchmark import model_config
    from tests.helpers.distributed import run_script

    model_config("qwen2_7b", 4096).save_pretrained(tmp_path / "qwen2_7b")
    proc = run_script(["-m", "colossal_llama2.plan", "--pretrained", tmp_path / "qwen2_7b", "--gpus", 1,
                       "--gpu_memory_gib", 139.7, "--grad_ckpt"])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("model: 7.62 B parameters, 28 layers")
    rows = {tuple(line.split()[:2]): float(line.split()[2]) for line in lines[2:9]}
    assert set(rows) == {("ddp", "adamw"), ("zero2", "adamw"), ("gemini", "adamw"), ("zero2_cpu", "adamw"),
                         ("gemini_auto", "adamw"), ("zero2", "adamw_bf16"), ("zero2", "adamw8bit")}
    zero2 = rows["zero2", "adamw"]
    assert 0.95 <= zero2 / (115.03 * GIB / 1e9) <= 1.10  # the measured peak at this shape
    # bf16 states: 8 bytes per parameter fewer than fp32 master weights and states; 8-bit: 2 more fewer
    assert zero2 - rows["zero2", "adamw_bf16"] == pytest.approx(8 * 7.62, abs=0.2)
    assert rows["zero2", "adamw_bf16"] - rows["zero2", "adamw8bit"] == pytest.approx(2 * 7.62, abs=0.2)
    assert "--fp8 tensorwise" in lines[9]
    assert lines[-1].startswith("--plugin auto would pick: zero2")
    low = run_script(["-m", "colossal_llama2.plan", "--pretrained", tmp_path / "qwen2_7b", "--gpu_memory_gib", 64,
                      "--grad_ckpt", "--optimizer", "adamw8bit"])
    assert low.returncode == 0 and low.stdout.strip().splitlines()[-1].startswith(
        "--plugin auto would pick: zero2 (--optimizer adamw8bit"), low.stdout
    bad = run_script(["-m", "colossal_llama2.plan", "--pretrained", tmp_path / "nope", "--gpu_memory_gib", 80])
    assert bad.returncode == 2 and "--pretrained" in bad.stderr


def test_train_py_resolves_auto_and_logs_why(tmp_path, tiny_model_dir, tiny_tokenizer_dir):
    from tests.scripts.fixture_dataset import build_dataset

    data = build_dataset(tiny_tokenizer_dir, tmp_path / "data", max_length=64, num_parts=1)
    proc = run_distributed(REPO_ROOT / "train.py", [
        "--pretrained", tiny_model_dir, "--dataset", data, "--plugin", "auto", "--max_length", 64,
        "--micro_batch_size", 2, "--max_steps", 2, "--no_save", "--padding_mode", "longest",
        "--tensorboard_dir", tmp_path / "tb", "--config_file", tmp_path / "config.json"], nproc=2, timeout=240)
    assert "--plugin auto chose ddp: no CUDA GPU" in proc.stdout
    assert json.loads((tmp_path / "config.json").read_text())["plugin"] == "ddp"
