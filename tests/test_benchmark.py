"""The GPU benchmark harness, run on CPU with a tiny shape: it drives the real train.py and reports medians."""
import json

from tests.helpers.distributed import REPO_ROOT, run_script


def test_benchmark_harness_runs_train_py_and_reports(tmp_path):
    out = tmp_path / "bench"
    proc = run_script([REPO_ROOT / "benchmarks" / "train_benchmark.py", "--shapes", "tiny", "--plugins", "ddp",
                       "--nproc", 2, "--seq_len", 128, "--steps", 6, "--warmup", 2, "--docs_per_sample", 3,
                       "--out_dir", out, "--variant", "reference=--fused_loss off", "--variant", "fused=--fused_loss on"],
                      timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())["results"]
    r, fused = results
    assert r["ok"] and r["timed_steps"] == 4 and len(r["losses"]) == 6
    assert r["tokens_per_s_per_gpu"] > 0 and r["losses"][-1] < r["losses"][0]
    # the second variant is compared with the first: same training, so the same loss curve (fp32 on CPU)
    assert fused["ok"] and fused["loss_vs"] == r["name"] == "tiny-ddp-nockpt-reference"
    assert fused["max_abs_loss_diff"] < 1e-4, (r["losses"], fused["losses"])
    config = json.loads((out / r["name"] / "config.json").read_text())
    assert config["random_init"] and config["no_save"] and config["plugin"] == "ddp"
    assert not (out / r["name"] / "ckpt").exists(), "--no_save writes no checkpoint"
    table = (out / "results.md").read_text()
    assert "| tiny-ddp-nockpt-reference | 2 |" in table and "loss diff max" in table
