"""GPU plugins (on a machine with CUDA GPUs: `pytest -m gpu tests/test_train_gpu.py`).

Each plugin trains the tiny model from --pretrained for a few steps (loss must fall), saves, resumes from
the mid-run checkpoint and continues with the same losses (to GPU tolerance), and the saved modeling/
loads with plain transformers.
"""
from __future__ import annotations

import json
import re

import pytest
import torch

from tests.helpers.distributed import REPO_ROOT, run_distributed
from tests.scripts.fixture_dataset import build_dataset

pytestmark = pytest.mark.gpu
TRAIN = REPO_ROOT / "train.py"
# (plugin, tensor-parallel size, ranks, precision); the 2-rank cases need 2 GPUs
CASES = [("gemini", 1, 1, "bf16"), ("gemini", 1, 1, "fp16"), ("gemini_auto", 1, 1, "bf16"), ("zero2", 1, 1, "bf16"),
         ("zero2", 1, 1, "fp16"), ("zero2_cpu", 1, 1, "bf16"), ("3d", 1, 1, "bf16"), ("ddp", 1, 1, "bf16"),
         ("3d", 2, 2, "bf16"), ("zero2", 1, 2, "bf16")]


@pytest.fixture(scope="module")
def gpu_data(tmp_path_factory, tiny_tokenizer_dir):
    return build_dataset(tiny_tokenizer_dir, tmp_path_factory.mktemp("gpu_data") / "arrow", max_length=64,
                         num_parts=2)


def metrics(path):
    return {r["step"]: r for r in map(json.loads, (path / "metrics.jsonl").read_text().splitlines()) if "loss" in r}


@pytest.mark.parametrize("plugin, tp, nproc, precision", CASES,
                         ids=[f"{p}-tp{t}-{m}" + (f"-{n}gpus" if n > 1 else "") for p, t, n, m in CASES])
def test_plugin_trains_saves_and_resumes(tmp_path, tiny_model_dir, gpu_data, plugin, tp, nproc, precision):
    if torch.cuda.device_count() < nproc:
        pytest.skip(f"needs {nproc} GPUs")
    common = ["--pretrained", tiny_model_dir, "--dataset", gpu_data, "--plugin", plugin, "--tp", tp,
              "--mixed_precision", precision, "--max_length", 64, "--micro_batch_size", 4, "--lr", 1e-2,
              "--padding_mode", "longest", "--max_steps", 8, "--save_interval", 4, "-s", 1,
              "--config_file", tmp_path / "c.json"]
    run_distributed(TRAIN, [*common, "--save_dir", tmp_path / "a", "--tensorboard_dir", tmp_path / "tb_a"],
                    nproc=nproc, timeout=600)
    full = metrics(tmp_path / "tb_a")
    assert sorted(full) == list(range(1, 9))
    assert full[8]["loss"] < full[1]["loss"] - 0.2, {s: r["loss"] for s, r in full.items()}
    assert all(r["grad_norm"] is not None and r["grad_norm"] > 0 for r in full.values())
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["epoch-0_step-4", "epoch-0_step-8"]
    run_distributed(TRAIN, [*common, "--save_dir", tmp_path / "b", "--tensorboard_dir", tmp_path / "tb_b",
                            "--load_checkpoint", tmp_path / "a" / "epoch-0_step-4"], nproc=nproc, timeout=600)
    resumed = metrics(tmp_path / "tb_b")
    assert sorted(resumed) == [5, 6, 7, 8]
    for step in resumed:
        assert resumed[step]["loss"] == pytest.approx(full[step]["loss"], rel=2e-2, abs=2e-2), step
    # The same resume with Adam's states dropped: the real resume must be far closer to the uninterrupted run.
    run_distributed(REPO_ROOT / "tests" / "scripts" / "train_resume_losing.py",
                    [*common, "--save_dir", tmp_path / "c", "--tensorboard_dir", tmp_path / "tb_c", "--no_save",
                     "--load_checkpoint", tmp_path / "a" / "epoch-0_step-4"], nproc=nproc, timeout=600,
                    env={"RESUME_LOSES": "optimizer"})
    lost = metrics(tmp_path / "tb_c")
    real_gap = max(abs(resumed[s]["loss"] - full[s]["loss"]) for s in (6, 7, 8))
    lost_gap = max(abs(lost[s]["loss"] - full[s]["loss"]) for s in (6, 7, 8))
    assert real_gap < lost_gap / 5, (real_gap, lost_gap)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    modeling = tmp_path / "a" / "epoch-0_step-8" / "modeling"
    model = AutoModelForCausalLM.from_pretrained(modeling)
    tok = AutoTokenizer.from_pretrained(modeling)
    assert model.get_input_embeddings().weight.shape[0] == len(tok)
    assert torch.isfinite(model.lm_head.weight).all()


# zero2's default: liger's kernels
FUSED_CASES = [("zero2", ["--fused_ops", "on", "--fused_loss", "on"], "RMSNorm fused, loss fused, compiled"),
               ("zero2", [], "liger RMSNorm/rotary/SwiGLU, loss fused, compiled"),
               ("zero2", ["--fused_ops", "liger", "--fused_loss", "linear", "--compile"],
                "liger RMSNorm/rotary/SwiGLU, loss liger fused linear cross-entropy"),
               ("gemini", [], "RMSNorm fused, loss fused, compiled"),
               ("ddp", [], "RMSNorm fused, loss fused, compiled")]


@pytest.mark.parametrize("plugin, flags, described", FUSED_CASES,
                         ids=[f"{p}-{'-'.join(f.lstrip('-') for f in flags) or 'default'}"
                              for p, flags, _ in FUSED_CASES])
def test_fused_kernels_train_like_the_reference(tmp_path, tiny_model_dir, gpu_data, plugin, flags, described):
    """The fused kernels (torch's, the compiled loss, liger-kernel's, with and without --compile) give the
    reference loss curve; the defaults are the ones the docs name."""
    if "liger" in described:
        pytest.importorskip("liger_kernel")
    common = ["--pretrained", tiny_model_dir, "--dataset", gpu_data, "--plugin", plugin, "--mixed_precision", "bf16",
              "--max_length", 64, "--micro_batch_size", 4, "--lr", 1e-2, "--padding_mode", "longest",
              "--max_steps", 6, "-s", 1, "--no_save", "--config_file", tmp_path / "c.json", "--seed", 3]
    runs = {}
    for name, extra in (("reference", ["--fused_ops", "off", "--fused_loss", "off"]), ("fused", flags)):
        proc = run_distributed(TRAIN, [*common, *extra, "--tensorboard_dir", tmp_path / name], nproc=1, timeout=600)
        runs[name] = metrics(tmp_path / name)
        if name == "fused":
            assert described in proc.stdout
    assert sorted(runs["fused"]) == sorted(runs["reference"]) == list(range(1, 7))
    # the first step's gradients come from identical weights: only the kernels differ (lm_head's included)
    assert runs["fused"][1]["grad_norm"] == pytest.approx(runs["reference"][1]["grad_norm"], rel=1e-2)
    # bf16 rounding differences grow with each lr 1e-2 update (measured: 1.8% apart at step 5 for liger's
    # kernels): 1% over the first two steps, 3% after; a wrong kernel is off from step 1
    for step, row in runs["reference"].items():
        tolerance = 1e-2 if step <= 2 else 3e-2
        assert runs["fused"][step]["loss"] == pytest.approx(row["loss"], rel=tolerance, abs=1e-2), step


def test_fast_zero_step_trains_like_the_library_step(tmp_path, tiny_model_dir, gpu_data):
    """zero_step.py's step (fp32 foreach norm; bf16 gradients into the Adam kernel, which clips; weights written
    in place) and zero_reduction.py's gradient reduction against colossalai's own: the same arithmetic, so the
    same curve."""
    common = ["--pretrained", tiny_model_dir, "--dataset", gpu_data, "--plugin", "zero2", "--mixed_precision", "bf16",
              "--max_length", 64, "--micro_batch_size", 4, "--lr", 1e-2, "--padding_mode", "longest",
              "--max_steps", 6, "-s", 1, "--no_save", "--config_file", tmp_path / "c.json", "--seed", 3,
              "--gradient_clipping", "0.1"]
    runs = {}
    for name in ("library", "fast"):
        proc = run_distributed(TRAIN, [*common, "--zero_step", name, "--zero_reduce", name,
                                       "--tensorboard_dir", tmp_path / name], nproc=1, timeout=600)
        runs[name] = metrics(tmp_path / name)
        assert ("bf16 gradients straight into the Adam kernel" in proc.stdout) == (name == "fast")
        assert ("reduce-scattered with AVG" in proc.stdout) == (name == "fast")
    assert all(row["grad_norm"] > 0.1 for row in runs["library"].values())  # clipping acted on every step
    for step, row in runs["library"].items():
        assert runs["fast"][step]["grad_norm"] == pytest.approx(row["grad_norm"], rel=1e-2), step
        assert runs["fast"][step]["loss"] == pytest.approx(row["loss"], rel=1e-2, abs=1e-2), step


@pytest.mark.parametrize("offload", [False, True], ids=["zero2", "zero2_cpu"])
@pytest.mark.parametrize("nproc", [1, 2], ids=["1gpu", "2gpus"])
def test_fused_zero_step_updates_exactly_like_the_library(nproc, offload):
    """The gradient reduction and optimizer step alone, same gradients: master weights, Adam states and bf16
    weights as colossalai's (zero2_cpu: the pipelined offloaded step, its states in host memory)."""
    if torch.cuda.device_count() < nproc:
        pytest.skip(f"needs {nproc} GPUs")
    proc = run_distributed(REPO_ROOT / "tests" / "scripts" / "zero_step_equivalence.py",
                           ["--offload"] if offload else [], nproc=nproc, timeout=300)
    assert proc.stdout.count("EQUIVALENT") == nproc, proc.stdout[-3000:]


@pytest.mark.parametrize("tp", [1, 2], ids=["tp1", "tp2-2gpus"])
def test_3d_isolates_packed_documents(tiny_model_dir, tp):
    """Under shardformer (tensor parallel), a packed document's loss equals its loss as a separate sample."""
    if torch.cuda.device_count() < tp:
        pytest.skip(f"needs {tp} GPUs")
    proc = run_distributed(REPO_ROOT / "tests" / "scripts" / "three_d_isolation.py", [tiny_model_dir, tp], nproc=tp,
                           timeout=600)
    result = json.loads(proc.stdout.split("ISOLATION ")[1].splitlines()[0])
    # measured with tp 1 on an H100: 6.437072 both ways, and 6.442384 with a plain causal mask
    assert result["packed"] == pytest.approx(result["alone"], abs=1e-3), result
    # the check can fail: without the block mask document b attends to document a
    assert abs(result["packed_not_isolated"] - result["alone"]) > 2e-3, result


@pytest.mark.parametrize("choice", ["tensorwise", "rowwise"])
def test_fp8_trains_like_bf16(tmp_path, tiny_model_dir, gpu_data, choice):
    """--fp8 runs its matmuls in fp8 (the losses move off bf16's) and stays within fp8's error of the bf16 curve."""
    if torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("fp8 matmuls need compute capability 8.9+")
    pytest.importorskip("torchao")
    common = ["--pretrained", tiny_model_dir, "--dataset", gpu_data, "--plugin", "zero2", "--mixed_precision", "bf16",
              "--max_length", 64, "--micro_batch_size", 4, "--lr", 1e-2, "--padding_mode", "longest",
              "--max_steps", 6, "-s", 1, "--no_save", "--config_file", tmp_path / "c.json", "--seed", 3,
              "--compile", "--fused_ops", "on"]  # both runs compiled: fp8's casts fuse into the layers' graphs
    runs = {}
    for name, extra in (("bf16", []), ("fp8", ["--fp8", choice, *(["--fp8_experimental"] if choice == "rowwise" else [])])):
        proc = run_distributed(TRAIN, [*common, *extra, "--tensorboard_dir", tmp_path / name], nproc=1, timeout=600)
        runs[name] = metrics(tmp_path / name)
    assert f"fp8 linears ({choice})" in proc.stdout
    # 2 layers x (q, k, v, o, gate, up, down); lm_head stays bf16
    assert "14 decoder linears run as torchao Float8Linear" in proc.stdout
    assert sorted(runs["fp8"]) == sorted(runs["bf16"]) == list(range(1, 7))
    diffs = [abs(runs["fp8"][s]["loss"] - row["loss"]) for s, row in runs["bf16"].items()]
    assert max(diffs) > 0, "identical losses: the fp8 path did not run"
    # fp8's error compounds over lr 1e-2 updates (measured: 0.0004 at step 1, 0.107 at step 5 of ~5.5)
    assert max(diffs[:3]) < 0.03 and max(diffs) < 0.2, diffs
    assert runs["fp8"][1]["grad_norm"] == pytest.approx(runs["bf16"][1]["grad_norm"], rel=0.1)


@pytest.mark.parametrize("plugin", ["zero2", "gemini", "3d"])
def test_tied_qwen2_trains_saves_and_resumes(tmp_path, qwen2_tokenizer_dir, plugin):
    """A Qwen2-style model with tied embeddings (no bos token) through a plugin's save and load: it saves the
    matrix once, resumes on the same curve, and plain transformers loads it still tied."""
    from colossal_llama2.tiny_base import build_tiny_family_model

    model_dir = build_tiny_family_model("qwen2", qwen2_tokenizer_dir, tmp_path / "model")
    data = build_dataset(qwen2_tokenizer_dir, tmp_path / "data", max_length=64, num_parts=2)
    common = ["--pretrained", model_dir, "--dataset", data, "--plugin", plugin, "--mixed_precision", "bf16",
              "--max_length", 64, "--micro_batch_size", 4, "--lr", 1e-2, "--padding_mode", "longest",
              "--max_steps", 8, "--save_interval", 4, "-s", 1, "--config_file", tmp_path / "c.json"]
    run_distributed(TRAIN, [*common, "--save_dir", tmp_path / "a", "--tensorboard_dir", tmp_path / "tb_a"],
                    nproc=1, timeout=600)
    run_distributed(TRAIN, [*common, "--save_dir", tmp_path / "b", "--tensorboard_dir", tmp_path / "tb_b",
                            "--load_checkpoint", tmp_path / "a" / "epoch-0_step-4"], nproc=1, timeout=600)
    full, resumed = metrics(tmp_path / "tb_a"), metrics(tmp_path / "tb_b")
    assert full[8]["loss"] < full[1]["loss"] - 0.2
    for step in (5, 6, 7, 8):
        assert resumed[step]["loss"] == pytest.approx(full[step]["loss"], rel=2e-2, abs=2e-2), step
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "b" / "epoch-0_step-8" / "modeling")
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    index = json.loads(next((tmp_path / "b" / "epoch-0_step-8" / "modeling").glob("*.index.json")).read_text())
    assert "lm_head.weight" not in index["weight_map"] and "model.embed_tokens.weight" in index["weight_map"]


@pytest.mark.parametrize("family", ["llama3", "qwen2", "qwen3", "mistral"])
def test_fast_paths_apply_to_each_family(tmp_path, llama3_tokenizer_dir, qwen2_tokenizer_dir, family):
    """zero2's defaults (liger's kernels through the family's entry point, the fused loss, cuDNN attention for
    whole samples) on LLaMA-3 (GQA 4:1), Qwen2 (qkv bias, tied) and Mistral train like the reference modules."""
    pytest.importorskip("liger_kernel")
    from colossal_llama2.tiny_base import build_tiny_family_model

    tok = qwen2_tokenizer_dir if family.startswith("qwen") else llama3_tokenizer_dir
    model_dir = build_tiny_family_model(family, tok, tmp_path / "model")
    data = build_dataset(tok, tmp_path / "data", max_length=64, num_parts=1)
    common = ["--pretrained", model_dir, "--dataset", data, "--plugin", "zero2", "--mixed_precision", "bf16",
              "--max_length", 64, "--micro_batch_size", 4, "--lr", 1e-2, "--padding_mode", "longest",
              "--max_steps", 6, "-s", 1, "--no_save", "--config_file", tmp_path / "c.json", "--seed", 3]
    runs = {}
    for name, extra in (("reference", ["--fused_ops", "off", "--fused_loss", "off"]), ("fast", [])):
        proc = run_distributed(TRAIN, [*common, *extra, "--tensorboard_dir", tmp_path / name], nproc=1, timeout=600)
        runs[name] = metrics(tmp_path / name)
    assert "liger RMSNorm/rotary/SwiGLU" in proc.stdout and "modules and the rotary embedding patched" in proc.stdout
    for step, row in runs["reference"].items():
        assert runs["fast"][step]["loss"] == pytest.approx(row["loss"], rel=1e-2, abs=1e-2), step
    assert runs["fast"][1]["grad_norm"] == pytest.approx(runs["reference"][1]["grad_norm"], rel=1e-2)


# Two runs beside the reference: the layers compiled with the packed-document (varlen) attention kernel, compared
# tightly; and fp8 (compiled too, as it must be), compared within fp8's error.
FAMILY_PATHS = {"compiled_varlen": ["--compile", "--attention", "varlen"],
                "fp8": ["--compile", "--fp8", "tensorwise"]}


@pytest.mark.parametrize("family", ["llama3", "qwen2", "mistral"])
def test_compile_fp8_and_varlen_apply_to_each_family(tmp_path, llama3_tokenizer_dir, qwen2_tokenizer_dir, family):
    """--compile, --fp8 tensorwise and varlen attention on LLaMA-3 (GQA 4:1), Qwen2 (qkv bias, tied) and
    Mistral (GQA 2:1): each runs (its log line says so) and trains like the reference modules."""
    pytest.importorskip("torchao")
    if torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("fp8 matmuls need compute capability 8.9+")
    from colossal_llama2.tiny_base import build_tiny_family_model

    tok = qwen2_tokenizer_dir if family == "qwen2" else llama3_tokenizer_dir
    model_dir = build_tiny_family_model(family, tok, tmp_path / "model")
    data = build_dataset(tok, tmp_path / "data", max_length=64, num_parts=1)
    common = ["--pretrained", model_dir, "--dataset", data, "--plugin", "zero2", "--mixed_precision", "bf16",
              "--max_length", 64, "--micro_batch_size", 4, "--lr", 1e-2, "--padding_mode", "longest",
              "--max_steps", 6, "-s", 1, "--no_save", "--config_file", tmp_path / "c.json", "--seed", 3,
              "--fused_ops", "on"]
    runs, logs = {}, {}
    for name, extra in (("reference", []), *FAMILY_PATHS.items()):
        proc = run_distributed(TRAIN, [*common, *extra, "--tensorboard_dir", tmp_path / name], nproc=1, timeout=600)
        runs[name], logs[name] = metrics(tmp_path / name), proc.stdout
    assert "decoder layers compiled" in logs["compiled_varlen"] and "decoder layers compiled" not in logs["reference"]
    assert "14 decoder linears run as torchao Float8Linear" in logs["fp8"]  # 2 layers x q, k, v, o, gate, up, down
    kernel = {name: re.search(r"precision bf16.*?, attention (\S+),", logs[name]).group(1) for name in logs}
    assert kernel["compiled_varlen"] != kernel["reference"] and "varlen" in kernel["compiled_varlen"], kernel
    for name in FAMILY_PATHS:
        diffs = [abs(runs[name][s]["loss"] - row["loss"]) for s, row in runs["reference"].items()]
        if name == "fp8":  # step 1 differs by fp8's forward error alone; later steps compound it over lr 1e-2
            # updates (seen up to 0.07 at step 3 on one H200; see test_fp8_trains_like_bf16)
            assert 0 < diffs[0] < 0.01 and max(diffs) < 0.15, (name, diffs)
        else:
            assert max(diffs) < 2e-2 + 1e-2 * runs["reference"][1]["loss"], (name, diffs)
            assert runs[name][1]["grad_norm"] == pytest.approx(runs["reference"][1]["grad_norm"], rel=1e-2), name


@pytest.mark.parametrize("optimizer", ["adamw_bf16", "adamw8bit"])
def test_low_memory_optimizer_trains_saves_and_resumes(tmp_path, tiny_model_dir, gpu_data, optimizer):
    """zero2 with torchao's low-memory AdamW: no fp32 master weights, the loss falls like fp32 AdamW's, and a
    resume from the mid-run checkpoint (rank files of 8-bit/bf16 states) continues the same curve."""
    pytest.importorskip("torchao")
    common = ["--pretrained", tiny_model_dir, "--dataset", gpu_data, "--plugin", "zero2", "--mixed_precision", "bf16",
              "--max_length", 64, "--micro_batch_size", 4, "--lr", 1e-2, "--padding_mode", "longest",
              "--max_steps", 8, "--save_interval", 4, "-s", 1, "--config_file", tmp_path / "c.json", "--seed", 3]
    run_distributed(TRAIN, [*common, "--save_dir", tmp_path / "ref", "--tensorboard_dir", tmp_path / "tb_ref",
                            "--no_save"], nproc=1, timeout=600)
    proc = run_distributed(TRAIN, [*common, "--optimizer", optimizer, "--save_dir", tmp_path / "a",
                                   "--tensorboard_dir", tmp_path / "tb_a"], nproc=1, timeout=600)
    assert f"optimizer {optimizer}" in proc.stdout
    assert (tmp_path / "a" / "epoch-0_step-4" / "optimizer" / "rank-00000.pt").is_file()
    run_distributed(TRAIN, [*common, "--optimizer", optimizer, "--save_dir", tmp_path / "b", "--tensorboard_dir",
                            tmp_path / "tb_b", "--load_checkpoint", tmp_path / "a" / "epoch-0_step-4"],
                    nproc=1, timeout=600)
    ref, full, resumed = metrics(tmp_path / "tb_ref"), metrics(tmp_path / "tb_a"), metrics(tmp_path / "tb_b")
    assert full[8]["loss"] < full[1]["loss"] - 0.5
    # bf16 weights with stochastic rounding: the curve stays near fp32 AdamW's, not on it
    assert abs(full[8]["loss"] - ref[8]["loss"]) < 0.1 * ref[8]["loss"], (full[8], ref[8])
    assert any(full[s]["loss"] != ref[s]["loss"] for s in ref), "identical to fp32 AdamW: the optimizer did not change"
    for step in (5, 6, 7, 8):
        assert resumed[step]["loss"] == pytest.approx(full[step]["loss"], rel=2e-2, abs=2e-2), step
