"""One command for every stage: ``colossal-llama2 <stage>`` (and ``python -m colossal_llama2``), the top-level
scripts staying thin entry points to the same functions."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from colossal_llama2.cli import STAGES, entry_point, main
from tests.helpers import distributed as dist_helpers


def console(*args: str, cwd=None) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("colossal-llama2")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "colossal_llama2"]
    return subprocess.run([*command, *map(str, args)], env=dist_helpers.test_env(), cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def test_every_stage_has_an_entry_point_with_help(capsys):
    for stage in STAGES:
        with pytest.raises(SystemExit) as done:
            entry_point(stage)(["--help"])
        assert done.value.code == 0, stage
        assert "usage:" in capsys.readouterr().out
    assert main([]) == 2 and main(["no-such-stage"]) == 2


def test_the_console_command_runs_the_stages(tmp_path, tiny_tokenizer_dir, tiny_model_dir):
    """extend-tokenizer, then train on one process without any launcher, through the installed command."""
    from tests.scripts.fixture_dataset import build_dataset

    listing = console("--help")
    assert listing.returncode == 0 and all(stage in listing.stdout for stage in STAGES)
    (tmp_path / "pieces.jsonl").write_text(json.dumps({"piece": "river"}) + "\n")
    made = console("extend-tokenizer", "--source_tokenizer_dir", tiny_tokenizer_dir, "--target_tokenizer_dir",
                   tmp_path / "tok", "--expand_tokens_file", tmp_path / "pieces.jsonl")
    assert made.returncode == 0 and (tmp_path / "tok" / "tokenizer.model").is_file(), made.stderr[-2000:]
    data = build_dataset(tiny_tokenizer_dir, tmp_path / "data", max_length=64, num_parts=1)
    trained = console("train", "--pretrained", tiny_model_dir, "--dataset", data, "--plugin", "ddp", "--max_length",
                      64, "--max_steps", 2, "--save_dir", tmp_path / "ckpt", "--padding_mode", "longest")
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "world size 1" in trained.stderr + trained.stdout
    assert (tmp_path / "ckpt" / "epoch-0_step-2" / "modeling" / "config.json").is_file()
    bad = console("prepare-sft", "--data_input_dirs", tmp_path / "nowhere", "--tokenizer_dir", tiny_tokenizer_dir,
                  "--data_arrow_output_dir", tmp_path / "out")
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: ") and "Traceback" not in bad.stderr


def test_no_script_edits_sys_path():
    root = Path(__file__).resolve().parents[1]
    offenders = [str(p.relative_to(root)) for p in (root / "colossal_llama2").rglob("*.py")
                 if "sys.path.insert" in p.read_text(encoding="utf-8")]
    assert offenders == []
