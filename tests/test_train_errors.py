"""train.py refuses bad input before any heavy work, with an error naming the flag (exit 2 on every rank)."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from colossal_llama2.dataset.schema import META_FILE, part_name
from colossal_llama2.utils.errors import UserInputError
from tests.helpers.distributed import REPO_ROOT, run_distributed
from tests.scripts.fixture_dataset import build_dataset

import train as train_script


@pytest.fixture(scope="module")
def datasets_dir(tmp_path_factory, tiny_tokenizer_dir):
    root = tmp_path_factory.mktemp("err_data")
    build_dataset(tiny_tokenizer_dir, root / "ok", max_length=64, num_parts=1)
    build_dataset(tiny_tokenizer_dir, root / "big_vocab", max_length=64, num_parts=1, vocab_size=700)
    return root


def run_main(monkeypatch, tmp_path, model_dir, dataset, *extra, world_size=1):
    monkeypatch.setenv("WORLD_SIZE", str(world_size))
    argv = ["--pretrained", str(model_dir), "--dataset", str(dataset), "--plugin", "ddp", "--max_length", "64",
            "--save_dir", str(tmp_path / "ckpt"), "--tensorboard_dir", str(tmp_path / "tb"),
            "--config_file", str(tmp_path / "c.json"), *map(str, extra)]
    with pytest.raises(UserInputError) as err:
        train_script.main(argv)
    assert not (tmp_path / "ckpt").exists() and not (tmp_path / "c.json").exists(), "nothing written before checks"
    return err.value


def test_dataset_missing_or_not_ours(monkeypatch, tmp_path, tiny_model_dir, datasets_dir):
    err = run_main(monkeypatch, tmp_path, tiny_model_dir, tmp_path / "missing")
    assert err.where == "--dataset" and "does not exist" in str(err)
    foreign = tmp_path / "foreign" / part_name(0)
    shutil.copytree(datasets_dir / "ok" / part_name(0), foreign)
    (foreign / META_FILE).unlink()
    err = run_main(monkeypatch, tmp_path, tiny_model_dir, foreign)
    assert err.where == "--dataset" and "not a dataset part written by" in str(err)


def test_vocab_mismatch(monkeypatch, tmp_path, tiny_model_dir, datasets_dir):
    err = run_main(monkeypatch, tmp_path, tiny_model_dir, datasets_dir / "big_vocab")
    assert err.where == "--dataset" and "700 tokens" in str(err) and "600 embedding rows" in str(err)


def test_tokenizer_larger_than_model(monkeypatch, tmp_path, tiny_model_dir, datasets_dir):
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**config, "vocab_size": 500}))
    err = run_main(monkeypatch, tmp_path, model_dir, datasets_dir / "ok")
    assert err.where == "--pretrained" and "600 tokens" in str(err) and "500 embedding rows" in str(err)


@pytest.mark.parametrize("max_length, expect", [(32, "samples would be cut"), (128, "above the dataset's")])
def test_max_length_must_match_data(monkeypatch, tmp_path, tiny_model_dir, datasets_dir, max_length, expect):
    err = run_main(monkeypatch, tmp_path, tiny_model_dir, datasets_dir / "ok", "--max_length", max_length)
    assert err.where == "--max_length" and expect in str(err)


@pytest.mark.parametrize("flag, value", [("--zero_gather_chunk_in_m", -1), ("--reduce_bucket_size_in_m", 0)])
def test_size_flags_out_of_range(monkeypatch, tmp_path, tiny_model_dir, datasets_dir, flag, value):
    err = run_main(monkeypatch, tmp_path, tiny_model_dir, datasets_dir / "ok", flag, value)
    assert err.where == flag and "must be >=" in str(err)


def test_tp_must_divide_heads_and_world_size(monkeypatch, tmp_path, tiny_model_dir, datasets_dir):
    # The tiny model has 4 attention heads and 2 key-value heads.
    err = run_main(monkeypatch, tmp_path, tiny_model_dir, datasets_dir / "ok", "--plugin", "3d", "--tp", 4,
                   world_size=4)
    assert err.where == "--tp" and "2 key-value heads" in str(err)
    err = run_main(monkeypatch, tmp_path, tiny_model_dir, datasets_dir / "ok", "--plugin", "3d", "--tp", 2,
                   world_size=3)
    assert err.where == "--tp" and "world size 3" in str(err)
    err = run_main(monkeypatch, tmp_path, tiny_model_dir, datasets_dir / "ok", "--tp", 2, world_size=2)
    assert err.where == "--tp" and "needs --plugin 3d" in str(err)


def test_tp_must_divide_the_vocabulary_it_splits(monkeypatch, tmp_path, tiny_model_dir, datasets_dir):
    """Both stacks' tensor-parallel policies (colossalai's, and the head-sharding one on transformers 5) split the
    embedding and lm_head by vocabulary rows, so --tp must divide them. Checked from config.json before any weight
    is read, so an edited config is enough."""
    odd = tmp_path / "odd_vocab_model"
    shutil.copytree(tiny_model_dir, odd)
    config = json.loads((odd / "config.json").read_text())
    config["vocab_size"] = 601
    (odd / "config.json").write_text(json.dumps(config))
    err = run_main(monkeypatch, tmp_path, odd, datasets_dir / "ok", "--plugin", "3d", "--tp", 2, world_size=2)
    assert err.where == "--tp" and "vocabulary of 601" in str(err) and "--pad_to_multiple_of" in str(err)


def test_bad_load_checkpoint(monkeypatch, tmp_path, tiny_model_dir, datasets_dir):
    (tmp_path / "junk").mkdir()
    err = run_main(monkeypatch, tmp_path, tiny_model_dir, datasets_dir / "ok", "--load_checkpoint", tmp_path / "junk")
    assert err.where == "--load_checkpoint"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
def test_gpu_plugin_on_cpu_fails_on_every_rank(tmp_path, tiny_model_dir, datasets_dir):
    args = ["--pretrained", tiny_model_dir, "--dataset", datasets_dir / "ok", "--plugin", "gemini",
            "--max_length", 64, "--save_dir", tmp_path / "ckpt", "--tensorboard_dir", tmp_path / "tb",
            "--config_file", tmp_path / "c.json"]
    proc = run_distributed(REPO_ROOT / "train.py", args, check=False, timeout=120)
    assert proc.returncode != 0
    assert proc.stdout.count("error: --plugin: plugin 'gemini' needs CUDA") == 2, proc.stdout[-2000:]
    assert "[rank0]: Traceback" not in proc.stdout and "[rank1]: Traceback" not in proc.stdout
    assert proc.stdout.count("exitcode  : 2") >= 1  # torchrun's report of the workers' exit status
    assert not (tmp_path / "ckpt").exists()


def test_fp8_refused_through_train_py(monkeypatch, tmp_path, tiny_model_dir, datasets_dir):
    err = run_main(monkeypatch, tmp_path, tiny_model_dir, datasets_dir / "ok", "--fp8", "tensorwise")
    assert err.where == "--fp8" and "works with --plugin zero2, zero2_cpu" in str(err) and "not ddp" in str(err)


HOPPER = (9, 0)


@pytest.mark.parametrize("choice, plugin, capability, max_length, experimental, says", [
    ("tensorwise", "gemini", HOPPER, 4096, True, "not gemini"),
    ("rowwise", "3d", HOPPER, 4096, True, "not 3d"),
    ("rowwise", "zero2", HOPPER, 4000 + 1, True, "--max_length divisible by 16 (got 4001)"),
    ("tensorwise", "zero2", (8, 0), 4096, True, "compute capability 8.9"),
    ("rowwise", "zero2", HOPPER, 4096, False, "fp8 ships when it is 1.2x the best bf16 path with the loss"),
], ids=["gemini", "3d", "max-length", "ampere", "not-experimental"])
def test_fp8_refusals(choice, plugin, capability, max_length, experimental, says):
    """--fp8 names the flag for a plugin that cannot run it, a --max_length fp8 cannot pad to, a GPU without
    fp8, and rowwise (below the bar fp8 ships at) without --fp8_experimental."""
    from colossal_llama2.training.kernels.fp8 import check_fp8

    with pytest.raises(UserInputError) as err:
        check_fp8(choice, plugin=plugin, capability=capability, experimental=experimental, max_length=max_length)
    assert err.value.where == "--fp8" and says in str(err.value), str(err.value)
    if experimental:
        assert "--fp8_experimental" not in str(err.value)


def test_fp8_tensorwise_needs_no_experimental_flag():
    """tensorwise met its bar: accepted on zero2/zero2_cpu without --fp8_experimental (with torchao present)."""
    from colossal_llama2.training.kernels.fp8 import check_fp8
    from tests.helpers.optional import import_torchao

    import_torchao()
    for plugin in ("zero2", "zero2_cpu"):
        check_fp8("tensorwise", plugin=plugin, capability=HOPPER, experimental=False, max_length=4096)


def test_fp8_filter_leaves_lm_head_and_odd_shapes_in_bf16():
    from transformers import LlamaConfig, LlamaForCausalLM

    from colossal_llama2.training.kernels.fp8 import decoder_linear_filter

    model = LlamaForCausalLM(LlamaConfig(hidden_size=64, intermediate_size=168, num_hidden_layers=2,
                                         num_attention_heads=4, vocab_size=100))  # 168 = 10.5 x 16
    chosen = sorted(name for name, m in model.named_modules() if decoder_linear_filter(m, name))
    assert chosen == sorted(f"model.layers.{i}.self_attn.{p}_proj" for i in range(2) for p in "qkvo")
