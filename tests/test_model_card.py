"""A saved model says what it is: a model card (README.md with YAML front matter) in init_model's output and in
every checkpoint's modeling/, read back with huggingface_hub."""
from __future__ import annotations

import json

from huggingface_hub import ModelCard

from colossal_llama2.model.init_model import init_model
from colossal_llama2.tokenizer.init_tokenizer import extend_tokenizer
from tests.helpers.distributed import REPO_ROOT, run_distributed
from tests.scripts.fixture_dataset import build_dataset


def test_grown_model_and_trained_checkpoint_carry_cards(tmp_path, tiny_tokenizer_dir, tiny_model_dir):
    (tmp_path / "pieces.jsonl").write_text("".join(json.dumps({"piece": p}) + "\n" for p in ("river", "baker")))
    extend_tokenizer(tiny_tokenizer_dir, tmp_path / "tok", expand_tokens_file=str(tmp_path / "pieces.jsonl"))
    init_model(tiny_model_dir, tmp_path / "tok", tmp_path / "grown", language=["zh", "en"])
    card = ModelCard.load(tmp_path / "grown" / "README.md")
    data = card.data.to_dict()
    assert data["base_model"] == tiny_model_dir.name and data["language"] == ["zh", "en"]
    assert data["library_name"] == "transformers" and "colossal-llama2" in data["tags"]
    assert "600 pieces" in card.text and "new rows by mean" in card.text

    dataset = build_dataset(tiny_tokenizer_dir, tmp_path / "data", max_length=64, num_parts=1)
    evaluation = build_dataset(tiny_tokenizer_dir, tmp_path / "eval", max_length=64, num_parts=1, kind="sft")
    run_distributed(REPO_ROOT / "train.py", [
        "--pretrained", tmp_path / "grown", "--dataset", dataset, "--eval_dataset", evaluation, "--plugin", "ddp",
        "--max_length", 64, "--max_steps", 2, "--save_dir", tmp_path / "ckpt", "--padding_mode", "longest",
        "--lr", 2e-3], timeout=240)
    metrics = [json.loads(line) for line in (tmp_path / "ckpt" / "tensorboard" / "metrics.jsonl").read_text().splitlines()]
    loss = next(r["loss"] for r in metrics if r.get("step") == 2 and "loss" in r)
    card = ModelCard.load(tmp_path / "ckpt" / "epoch-0_step-2" / "modeling" / "README.md")
    data = card.data.to_dict()
    assert data["base_model"] == tiny_model_dir.name and data["language"] == ["zh", "en"]  # carried on
    assert f"training loss {loss:.4f} at step 2" in card.text and "eval/loss" in card.text
    assert "`--lr` 0.002" in card.text and "category en:" in card.text and "category zh:" in card.text
