"""The launch examples run as shipped: `colossalai run` on 2 local CPU ranks with tiny fixtures and ddp."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import distributed as dist_helpers
from tests.helpers.distributed import REPO_ROOT, free_port
from tests.scripts.fixture_dataset import build_dataset


@pytest.mark.parametrize("script, project, sft", [("train.example.sh", "pt", False),
                                                  ("train_sft.example.sh", "sft", True)])
def test_launch_script_runs(tmp_path, tiny_tokenizer_dir, tiny_model_dir, script, project, sft):
    data = build_dataset(tiny_tokenizer_dir, tmp_path / "data", max_length=64, num_parts=2,
                         kind="sft" if sft else "pretrain")
    env = dist_helpers.test_env({
        "PROJECT_NAME": project, "PARENT_SAVE_DIR": str(tmp_path / "save"),
        "PARENT_TENSORBOARD_DIR": str(tmp_path / "tb"), "PARENT_CONFIG_FILE": str(tmp_path / "configs"),
        "PRETRAINED_MODEL_PATH": str(tiny_model_dir),
        "DATASET_DIRS": f"{data / 'part-00000'} {data / 'part-00001'}",
        "NPROC_PER_NODE": "2", "HOSTFILE": "", "MASTER_PORT": str(free_port()), "PLUGIN": "ddp",
        "MAX_LENGTH": "64", "WEIGHT_DECAY": "0.02", "WARMUP_STEPS": "1",
        "EXTRA_ARGS": "--max_steps 2 --padding_mode longest"})
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env["PATH"]])
    proc = subprocess.run(["bash", str(REPO_ROOT / script)], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-4000:]
    (run_dir,) = list((tmp_path / "save").iterdir())
    assert run_dir.name.startswith(project + "-")
    assert [p.name for p in run_dir.iterdir()] == ["epoch-0_step-2"]
    (config_file,) = list((tmp_path / "configs").iterdir())
    config = json.loads(config_file.read_text())
    assert config["dataset"] == [str(data / "part-00000"), str(data / "part-00001")]
    assert config["accumulation_steps"] == (8 if sft else 1) and config["use_neft"] is sft
    assert config["weight_decay"] == 0.02 and config["warmup_steps"] == 1
    assert not config["use_flash_attn"] and not config["use_grad_checkpoint"]  # the defaults: docs/benchmarks.md
    metrics = (tmp_path / "tb" / run_dir.name / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(m)["step"] for m in metrics] == [1, 2]


@pytest.mark.parametrize("script", ["train.example.sh", "train_sft.example.sh"])
def test_example_scripts_pass_no_hard_coded_value(script):
    """Every value train.py gets comes from a variable the environment can set (docs/training.md says so)."""
    import re

    command = (REPO_ROOT / script).read_text().split("exec ", 1)[1]
    assert re.findall(r"(--\w+) +([^\s\\\"$][^\s\\]*)", command) == []
    assert re.findall(r"(--\w+) +([^\s\\\"$][^\s\\]*)", "train.py --lr \"$LR\" --weight_decay 0.01 \\") == [
        ("--weight_decay", "0.01")]
