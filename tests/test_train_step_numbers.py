"""train.py's first logged loss and gradient norm against plain PyTorch on each document alone.

One optimizer step over every sample of a small packed dataset: samples of several documents each (so attention
isolation and the per-document positions matter), of different lengths (so there is padding), with prompt tokens
masked (-100), over two accumulated micro-batches (so the division by the step's label tokens matters). The
expectation runs each document by itself through the plain transformers model and sums
``F.cross_entropy(ignore_index=-100)`` over all of them: a trainer that lets documents see each other, counts
padding or forgets to divide over the accumulation window logs other numbers.
"""
from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest
import torch
import torch.nn.functional as F

from tests.helpers.distributed import REPO_ROOT, run_distributed
from tests.scripts.fixture_dataset import build_dataset

SENTENCES = ["The baker opens her shop at six.", "A boat crossed the lake.", "Snow fell on the hills.",
             "He reads the news every day.", "The river runs to the sea.", "Birds sing in the old tree.",
             "We walked home after dinner.", "The train was late again today.", "She paints the blue door.",
             "Cold wind came from the north.", "The market sells fresh apples.", "They planted tomatoes.",
             "The old man fixed the fence.", "Rain is coming this evening."]  # 4 samples: 4, 4, 4 and 2 documents


def expected_step(model_dir, samples: list[dict]) -> tuple[float, float]:
    """(token-mean loss, global gradient norm) of one step over ``samples``, each document on its own."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), torch_dtype=torch.float32, attn_implementation="eager")
    total, tokens = torch.zeros((), dtype=torch.float64), 0
    for sample in samples:
        start = 0
        for length in sample["seq_lengths"]:
            ids = torch.tensor([sample["input_ids"][start:start + length]])
            labels = torch.tensor(sample["labels"][start:start + length])
            start += length
            logits = model(input_ids=ids).logits[0, :-1].float()
            total = total + F.cross_entropy(logits, labels[1:], ignore_index=-100, reduction="sum").double()
            tokens += int((labels[1:] != -100).sum())
    loss = total / tokens
    loss.backward()
    norm = torch.sqrt(sum(p.grad.double().pow(2).sum() for p in model.parameters() if p.grad is not None))
    return loss.item(), norm.item()


@pytest.mark.parametrize("micro_batch, accumulation", [(2, 2)])
def test_first_step_loss_and_grad_norm_equal_plain_pytorch(tmp_path, tiny_tokenizer_dir, tiny_model_dir, micro_batch,
                                                           accumulation):
    data = build_dataset(tiny_tokenizer_dir, tmp_path / "data", max_length=64, num_parts=1,
                         categories={"en": SENTENCES})
    samples = list(datasets.load_from_disk(str(data / "part-00000")))
    assert len(samples) == micro_batch * accumulation  # every sample is in step 1, whatever the order
    assert all(len(s["seq_lengths"]) >= 2 for s in samples)  # packed
    assert len({len(s["input_ids"]) for s in samples}) > 1  # padded
    assert all(-100 in s["labels"][1:] for s in samples)  # masked prompts inside the samples
    (tmp_path / "cwd").mkdir()
    proc = run_distributed(REPO_ROOT / "train.py", [
        "--pretrained", tiny_model_dir, "--dataset", data, "--plugin", "ddp", "--max_length", 64,
        "--micro_batch_size", micro_batch, "--accumulation_steps", accumulation, "--padding_mode", "longest",
        "--max_steps", 1, "--gradient_clipping", 0, "--no_save"], nproc=1, timeout=240, cwd=tmp_path / "cwd")
    assert list((tmp_path / "cwd").iterdir()) == []  # --no_save: nothing in the current directory either
    metrics = Path(proc.stdout.split("metrics in ")[1].split()[0])
    (row,) = [json.loads(line) for line in (metrics / "metrics.jsonl").read_text().splitlines()
              if "loss" in json.loads(line)]
    loss, norm = expected_step(tiny_model_dir, samples)
    assert row["loss"] == pytest.approx(loss, rel=1e-5)
    assert row["grad_norm"] == pytest.approx(norm, rel=1e-4)


def test_outputs_default_under_the_save_dir(tmp_path):
    from colossal_llama2.training.args import parse_args

    common = ["--pretrained", "m", "--dataset", "d"]
    args = parse_args([*common, "--save_dir", str(tmp_path / "run")])
    assert (args.tensorboard_dir, args.config_file) == (str(tmp_path / "run" / "tensorboard"),
                                                        str(tmp_path / "run" / "config_file.json"))
    args = parse_args([*common, "--tensorboard_dir", "tb", "--config_file", "c.json"])
    assert (args.tensorboard_dir, args.config_file) == ("tb", "c.json")
    args = parse_args([*common, "--no_save"])
    assert Path(args.tensorboard_dir).parent == Path(args.config_file).parent
    assert Path(args.config_file).parent.parent == Path(__import__("tempfile").gettempdir())


def test_no_save_runs_on_one_master_port_get_directories_of_their_own(tmp_path):
    """--no_save puts metrics.jsonl in a temporary directory, the same for the ranks of one run and new for each
    run: two runs launched one after the other on the same master port (torchrun's default 29500 for everyone)
    once shared one, and the second run's metrics.jsonl held the first run's rows too."""
    import subprocess
    import sys

    from tests.helpers.distributed import free_port, test_env

    script = tmp_path / "where.py"
    script.write_text("from colossal_llama2.training.args import run_temp_dir\nprint('DIR', run_temp_dir())\n")
    port = str(free_port())
    runs = []
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                               "127.0.0.1", "--master_port", port, str(script)], env=test_env(), cwd=REPO_ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout[-2000:]
        runs.append({line.split("DIR ", 1)[1] for line in proc.stdout.splitlines() if "DIR " in line})
    assert all(len(dirs) == 1 for dirs in runs), runs  # one directory for both ranks of a run
    assert runs[0] != runs[1], runs
