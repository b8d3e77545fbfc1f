"""zero2 (colossalai's LowLevelZero plugin) on CPU over 2 gloo ranks, through tests/scripts/train_zero2_cpu.py:
its sharded checkpoints resume exactly, a resume that loses Adam's states is seen, gradient accumulation
matches a larger micro-batch, and a SIGTERM saves a complete checkpoint."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers.distributed import REPO_ROOT, free_port
from tests.test_train import base_args, data, read_metrics  # noqa: F401  (data: the module fixture)

ZERO2_CPU = REPO_ROOT / "tests" / "scripts" / "train_zero2_cpu.py"


def zero2_args(model_dir, data, out, **overrides):  # noqa: F811
    return base_args(model_dir, data, out, **{"--plugin": "zero2", "--mixed_precision": "bf16", **overrides})


def run_zero2(args, *, env=None, check=True, script=ZERO2_CPU):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), str(script), *map(str, args)]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=400,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})})
    if check:
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc


@pytest.fixture(scope="module")
def zero2_run(tmp_path_factory, tiny_model_dir, data):  # noqa: F811
    out = tmp_path_factory.mktemp("zero2_cpu")
    args = zero2_args(tiny_model_dir, data, out, **{"--save_interval": 3})
    proc = run_zero2(args)
    return out, args, proc


def test_zero2_trains_and_writes_sharded_states(zero2_run):
    out, _, proc = zero2_run
    assert "plugin zero2, precision bf16" in proc.stdout + proc.stderr
    train, _ = read_metrics(out / "tb")
    assert sorted(train) == [1, 2, 3, 4, 5, 6]
    assert train[6]["loss"] < train[1]["loss"] - 0.2
    optimizer = out / "ckpt" / "epoch-0_step-3" / "optimizer"
    assert (optimizer / "pytorch_optim.bin.index.json").is_file() or any(optimizer.glob("*.index.json"))


@pytest.mark.parametrize("lost", [None, "optimizer"], ids=["exact", "losing_optimizer"])
def test_zero2_resume_is_exact_and_a_lost_state_is_seen(zero2_run, tmp_path, lost):
    out, args, _ = zero2_run
    args = list(args)
    args[args.index("--save_dir") + 1] = str(tmp_path / "ckpt")
    args[args.index("--tensorboard_dir") + 1] = str(tmp_path / "tb")
    args += ["--load_checkpoint", str(out / "ckpt" / "epoch-0_step-3")]
    if lost:  # the resume-losing wrapper around the zero2 stand-ins
        run_zero2(args, env={"RESUME_LOSES": lost, "TRAIN_SCRIPT_WRAPS": str(ZERO2_CPU)},
                  script=REPO_ROOT / "tests" / "scripts" / "train_resume_losing.py")
    else:
        run_zero2(args)
    full, _ = read_metrics(out / "tb")
    again, _ = read_metrics(tmp_path / "tb")
    assert sorted(again) == [4, 5, 6]
    same = [again[s]["loss"] == full[s]["loss"] and again[s]["lr"] == full[s]["lr"] for s in (4, 5, 6)]
    assert all(same) if lost is None else not all(same), (again, full)


def test_zero2_accumulation_matches_a_larger_micro_batch(tmp_path, tiny_model_dir, data):  # noqa: F811
    runs = {}
    for name, mb, acc in (("one", 4, 1), ("acc", 2, 2)):
        run_zero2(zero2_args(tiny_model_dir, data, tmp_path / name, **{
            "--micro_batch_size": mb, "--accumulation_steps": acc, "--max_steps": 2, "--no_save": True}))
        runs[name], _ = read_metrics(tmp_path / name / "tb")
    for step in (1, 2):  # bf16 weights: the same sums in another order
        assert runs["acc"][step]["loss"] == pytest.approx(runs["one"][step]["loss"], rel=5e-3), step
        assert runs["acc"][step]["grad_norm"] == pytest.approx(runs["one"][step]["grad_norm"], rel=3e-2), step


def test_zero2_sigterm_saves_a_complete_checkpoint(tmp_path, tiny_model_dir, data):  # noqa: F811
    from tests.helpers.distributed import signal_workers_after

    args = zero2_args(tiny_model_dir, data, tmp_path, **{"--max_steps": 0, "--num_epochs": 200,
                                                         "--micro_batch_size": 1})
    metrics = tmp_path / "tb" / "metrics.jsonl"
    code, output = signal_workers_after(ZERO2_CPU, args, metrics, tmp_path / "log.txt")
    assert code == 0 and "SIGTERM received" in output, output[-3000:]
    last_step = max(read_metrics(tmp_path / "tb")[0])
    saved = tmp_path / "ckpt" / f"epoch-0_step-{last_step}"
    assert [p.name for p in (tmp_path / "ckpt").iterdir()] == [saved.name] and last_step >= 3
    # everything a resume reads (the resume itself: test_zero2_resume_is_exact_and_a_lost_state_is_seen)
    assert sorted(p.name for p in (saved / "optimizer").glob("master-rank-*")) == [
        "master-rank-00000.safetensors", "master-rank-00001.safetensors"]
    assert any((saved / "optimizer").glob("*.index.json")) and (saved / "running_states.json").is_file()
    assert (saved / "lr_scheduler").exists() and any((saved / "modeling").glob("*.safetensors"))

