"""The GPU benchmark harness, run on CPU with a tiny shape: it drives the real train.py and reports medians."""
import json

import pytest

from tests.helpers.distributed import REPO_ROOT, free_port, run_script

pytestmark = pytest.mark.stack_neutral  # CI runs it on the default transformers stack only


def test_benchmark_harness_runs_train_py_and_reports(tmp_path):
    out = tmp_path / "bench"
    proc = run_script([REPO_ROOT / "benchmarks" / "train_benchmark.py", "--master_port", free_port(),
                       "--shapes", "tiny", "--plugins", "ddp",
                       "--nproc", 2, "--seq_len", 128, "--steps", 6, "--warmup", 2, "--docs_per_sample", 3,
                       "--out_dir", out, "--peak_tflops_per_device", "0.5", "--variant", "reference=--fused_loss off", "--variant", "fused=--fused_loss on"],
                      timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())["results"]
    r, fused = results
    assert r["ok"] and r["timed_steps"] == 4 and len(r["losses"]) == 6
    assert r["tokens_per_s_per_gpu"] > 0 and r["losses"][-1] < r["losses"][0]
    # one MFU basis: the benchmark's and train.py's own logs both divide by the same peak
    from benchmarks.train_benchmark import param_count

    flops_per_token = 6 * param_count("tiny") + 12 * 2 * 128 * 128
    assert r["mfu"] == pytest.approx(r["tokens_per_s_per_gpu"] * flops_per_token / 1e12 / 0.5, rel=0.01, abs=1e-4)
    logged = [json.loads(line) for line in (out / r["name"] / "metrics.jsonl").read_text().splitlines()]
    assert all(row["mfu"] == pytest.approx(row["tflops"] / (0.5 * 2), rel=1e-6) for row in logged if "mfu" in row)
    # the second variant is compared with the first: same training, so the same loss curve (fp32 on CPU)
    assert fused["ok"] and fused["loss_vs"] == r["name"] == "tiny-ddp-nockpt-reference"
    assert fused["max_abs_loss_diff"] < 1e-4, (r["losses"], fused["losses"])
    config = json.loads((out / r["name"] / "config.json").read_text())
    assert config["random_init"] and config["no_save"] and config["plugin"] == "ddp"
    assert not (out / r["name"] / "ckpt").exists(), "--no_save writes no checkpoint"
    table = (out / "results.md").read_text()
    assert "| tiny-ddp-nockpt-reference | 2 |" in table and "loss diff max" in table


def test_fsdp2_peer_runs_through_the_harness_and_averages_its_micro_batches(tmp_path):
    """The FSDP2 peer (benchmarks/fsdp2_peer.py) on CPU over 2 gloo ranks, as --peers runs it: at random init the
    loss of a step is the mean over its micro-batches, ~ln(vocab) (their sum would be twice that); with
    activation checkpointing, and with only cuDNN attention enabled (on CPU: its math kernel runs), it
    trains the same numbers."""
    import math

    out = tmp_path / "bench"
    proc = run_script([REPO_ROOT / "benchmarks" / "train_benchmark.py", "--master_port", free_port(),
                       "--shapes", "tiny", "--plugins", "",
                       "--peers", "plain,ckpt,cudnn", "--nproc", 2, "--seq_len", 64, "--steps", 4, "--warmup", 1,
                       "--accumulation_steps", 2, "--out_dir", out], timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    plain, ckpt, cudnn = json.loads((out / "results.json").read_text())["results"]
    assert plain["ok"] and plain["name"] == "tiny-fsdp2-peer-plain" and ckpt["ok"]
    assert plain["tokens_per_gpu_per_step"] == 64 * 2 and plain["tokens_per_s_per_gpu"] > 0
    assert len(plain["losses"]) == 4 and max(r["vs_strongest_peer"] for r in (plain, ckpt, cudnn)) == 1.0
    assert abs(plain["losses"][0] - math.log(2048)) < 0.3, plain["losses"]
    assert ckpt["losses"] == plain["losses"]
    assert "+grad_ckpt" in (out / "tiny-fsdp2-peer-ckpt" / "log.txt").read_text()
    assert cudnn["losses"] == pytest.approx(plain["losses"], abs=1e-3)
    cudnn_log = (out / "tiny-fsdp2-peer-cudnn" / "log.txt").read_text()
    assert "+cudnn" in cudnn_log and '"attention": "sdpa (cuDNN only)"' in cudnn_log


def test_peer_flops_use_the_model_parameter_count_and_rows_get_their_ratio():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from transformers import AutoModelForCausalLM

    from benchmarks.train_benchmark import SHAPES, compare_with_peers, model_config, param_count

    for shape in ("tiny", "1b", "7b_8l", "13b"):
        with torch.device("meta"):
            model = LlamaForCausalLM(LlamaConfig(**SHAPES[shape], tie_word_embeddings=False))
        assert param_count(shape) == model.num_parameters()
    for shape, billions in (("llama3_8b", 8.03), ("qwen2_7b", 7.62), ("qwen2_tiny", None)):
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(model_config(shape, 4096))
        assert param_count(shape) == model.num_parameters()
        assert billions is None or round(model.num_parameters() / 1e9, 2) == billions  # the published sizes
    rows = [{"ok": True, "shape": "7b", "peer": "plain", "tokens_per_s_per_gpu": 100.0, "name": "p"},
            {"ok": True, "shape": "7b", "peer": "compile_liger", "tokens_per_s_per_gpu": 125.0, "name": "q"},
            {"ok": True, "shape": "7b", "tokens_per_s_per_gpu": 110.0, "name": "zero2"},
            {"ok": True, "shape": "1b", "tokens_per_s_per_gpu": 50.0, "name": "other"}]
    compare_with_peers(rows)
    assert [r.get("vs_strongest_peer") for r in rows] == [0.8, 1.0, 0.88, None]
    assert rows[2]["strongest_peer"] == "q"


def test_stop_time_measures_a_real_ctrl_c(tmp_path):
    """benchmarks/stop_time.py: Ctrl-C through the guard, one checkpoint, its size and save time reported."""
    proc = run_script([REPO_ROOT / "benchmarks" / "stop_time.py", "--master_port", free_port(), "--shape", "tiny",
                       "--plugin", "ddp", "--nproc", 2,
                       "--seq_len", 128, "--out_dir", tmp_path / "st"], timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("STOP_TIME ")[1].splitlines()[0])
    assert result["exit_status"] == 0 and 0 < result["seconds_from_signal_to_exit"] < 60
    assert result["checkpoint_gb"] > 0 and result["save_seconds"] is not None
    assert len(list((tmp_path / "st" / "ckpt").glob("epoch-*"))) == 1


def test_qwen2_shapes_run_in_train_py_and_the_peer(tmp_path):
    """A Qwen2 shape (qkv bias, GQA 2:1) through the harness: train.py and the FSDP2 peer build Qwen2 models."""
    out = tmp_path / "bench"
    proc = run_script([REPO_ROOT / "benchmarks" / "train_benchmark.py", "--master_port", free_port(),
                       "--shapes", "qwen2_tiny", "--plugins", "ddp",
                       "--peers", "plain", "--nproc", 2, "--seq_len", 64, "--steps", 3, "--warmup", 1,
                       "--out_dir", out], timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads((out / "results.json").read_text())["results"]
    assert [r["ok"] for r in rows] == [True, True]
    assert json.loads((out / "models" / "qwen2_tiny" / "config.json").read_text())["model_type"] == "qwen2"
    assert '"model": "qwen2"' in (out / "qwen2_tiny-fsdp2-peer-plain" / "log.txt").read_text()


def test_offload_bound_scales_each_part_to_the_model(tmp_path, monkeypatch):
    """benchmarks/offload_bound.py: each part's time on a chunk scaled to the shape's parameter count, and the
    bounds are the sum and the maximum of the parts."""
    import sys

    sys.path.insert(0, str(REPO_ROOT))
    from benchmarks.offload_bound import bound, main

    out = tmp_path / "bound.json"
    assert main(["--shape", "tiny", "--chunk_m", "0.05", "--repeats", "2", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["params"] == 128 * 2048 * 2 + 2 * (4 * 128 * 128 + 3 * 128 * 352 + 2 * 128) + 128
    parts = result["seconds"]
    pinned = [v for k, v in parts.items() if k.endswith("_pinned")]  # none without CUDA
    assert result["serial_bound_s"] == pytest.approx(parts["host_adam"] + sum(pinned), abs=2e-3)
    assert result["overlapped_bound_s"] == pytest.approx(max([parts["host_adam"], *pinned]), abs=1e-3)
    assert parts["host_adam"] > 0
    import benchmarks.offload_bound as offload_bound

    monkeypatch.setattr(offload_bound, "median_seconds", lambda fn, repeats, sync=None: 0.5)  # per chunk
    assert bound(10_000_000, 2_000_000, repeats=1)["seconds"]["host_adam"] == pytest.approx(2.5)
