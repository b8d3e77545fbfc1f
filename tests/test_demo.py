"""`make demo` end to end: every stage's output exists and loads, loss falls in each stage, text comes out."""
from __future__ import annotations

import json

import pytest

from tests.helpers.distributed import run_script


@pytest.mark.slow
@pytest.mark.stack_neutral  # the families' tests run these stages on both stacks
def test_demo_runs_the_whole_pipeline(tmp_path):
    out = tmp_path / "demo"
    proc = run_script(["-m", "colossal_llama2.demo", "--output_dir", out], timeout=900)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    for step in range(1, 8):
        assert f"=== {step}/7" in proc.stdout
    report = json.loads((out / "demo_report.json").read_text(encoding="utf-8"))

    from datasets import load_from_disk
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_tok = AutoTokenizer.from_pretrained(out / "base_model")
    ext_tok = AutoTokenizer.from_pretrained(out / "extended_tokenizer")
    assert len(ext_tok) > len(base_tok)
    english = "The teacher likes green tea very much."
    assert ext_tok(english)["input_ids"] == base_tok(english)["input_ids"], "base ids survive vocabulary growth"
    assert len(ext_tok("老师非常喜欢绿茶。")["input_ids"]) < len(base_tok("老师非常喜欢绿茶。")["input_ids"])
    grown = AutoModelForCausalLM.from_pretrained(out / "extended_model")
    assert grown.get_input_embeddings().weight.shape[0] == len(ext_tok)
    for kind in ("pretrain", "sft"):
        parts = sorted((out / "data" / f"{kind}_arrow").glob("part-*"))
        assert parts and all(len(load_from_disk(str(p))) > 0 for p in parts)

    assert set(report["stages"]) == {"pretrain-embeddings", "pretrain-full", "sft-neftune"}
    for name, stage in report["stages"].items():
        assert stage["steps"] > 0 and stage["last_loss"] < stage["first_loss"], (name, stage)
    final = AutoModelForCausalLM.from_pretrained(report["final_model"])
    final_tok = AutoTokenizer.from_pretrained(report["final_model"])
    assert final_tok.chat_template and final.get_input_embeddings().weight.shape[0] == len(ext_tok)
    assert report["generations"] and all(text.strip() for text in report["generations"].values())
    assert (out / "loss_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # A second run wipes and rebuilds only a directory the demo made; anything else is refused.
    foreign = tmp_path / "not_a_demo_dir"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    refused = run_script(["-m", "colossal_llama2.demo", "--output_dir", foreign], timeout=120)
    assert refused.returncode == 2 and "--output_dir" in refused.stderr
    assert (foreign / "precious.txt").read_text() == "keep me"
