"""train.py on data made by the real preparation script (not the schema fixture): SFT on 2 gloo ranks.

The saved modeling/ must carry the conversation template the data was rendered with, so that
``apply_chat_template`` on the trained model's own tokenizer reproduces the prepared token ids.
"""
from __future__ import annotations

import json

from datasets import load_from_disk
from transformers import AutoTokenizer

from tests.helpers.distributed import REPO_ROOT, run_distributed, run_script


def test_sft_training_on_prepared_data_keeps_chat_template(tmp_path, tiny_model_dir, english_lines, chinese_lines):
    in_dir = tmp_path / "sft_in"
    in_dir.mkdir()
    with (in_dir / "chat.jsonl").open("w", encoding="utf-8") as f:
        for i, (en, zh) in enumerate(zip(english_lines[:24], chinese_lines[:24])):
            messages = [{"from": "human", "content": f"Translate: {en}"}, {"from": "assistant", "content": zh}]
            if i % 3 == 0:
                messages = [{"from": "system", "content": "Be brief."}] + messages
            f.write(json.dumps({"messages": messages}, ensure_ascii=False) + "\n")
    arrow = tmp_path / "arrow"
    prep = run_script(["prepare_sft_dataset.py", "--data_input_dirs", in_dir, "--tokenizer_dir", tiny_model_dir,
                       "--data_arrow_output_dir", arrow, "--max_length", 512, "--num_spliced_dataset_bins", 2,
                       "--num_proc", 1])
    assert prep.returncode == 0, prep.stderr[-2000:]
    parts = sorted(arrow.glob("part-*"))
    assert len(parts) == 2
    summary = json.loads((arrow / "summary.json").read_text())
    assert summary["sequences"] == 24 and not summary["dropped"], "one sample per conversation, none dropped"

    out = tmp_path / "run"
    run_distributed(REPO_ROOT / "train.py", [
        "--pretrained", tiny_model_dir, "--dataset", *parts, "--plugin", "ddp", "--max_length", 512,
        "--micro_batch_size", 2, "--lr", 1e-2, "--num_epochs", 3, "--use_neft", "--save_dir", out / "ckpt",
        "--tensorboard_dir", out / "tb", "--config_file", out / "config.json", "--padding_mode", "longest",
        "--warmup_steps", 1], timeout=300)
    rows = [json.loads(line) for line in (out / "tb" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 18  # 24 conversations / (2 ranks x 2 per micro-batch) x 3 epochs
    assert sum(losses[-3:]) < 0.8 * sum(losses[:3]), losses

    (final,) = sorted((out / "ckpt").glob("epoch-*_step-*"))
    modeling = final / "modeling"
    tokenizer = AutoTokenizer.from_pretrained(modeling)
    assert tokenizer.chat_template, "the SFT template must travel with the trained model"
    # The trained model's own template renders an input conversation exactly as preparation tokenized it.
    first = json.loads((in_dir / "chat.jsonl").read_text(encoding="utf-8").splitlines()[0])
    role = {"system": "system", "human": "user", "assistant": "assistant"}
    rendered = tokenizer.apply_chat_template([{"role": role[m["from"]], "content": m["content"]}
                                              for m in first["messages"]], tokenize=True,
                                             return_dict=False)
    all_samples = [row["input_ids"] for part in parts for row in load_from_disk(str(part))]
    assert rendered in all_samples
