"""train.py end to end on 2 gloo CPU ranks with the ddp plugin and a tiny LLaMA.

Runs are few and combined: one NEFTune run with checkpoints and eval, its resume, two runs proving
accumulation equivalence (and that NEFTune changes training), one freeze run that also ends on a
non-finite loss, one SIGTERM run, and one 2-rank input-error run.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from colossal_llama2.utils.stack import transformers_5
from tests.helpers.distributed import REPO_ROOT, run_distributed
from tests.helpers import distributed as dist_helpers
from tests.scripts.fixture_dataset import build_dataset

TRAIN = REPO_ROOT / "train.py"


def build_reference_data(root: Path, tokenizer_dir: Path) -> dict:
    """Packed training data and a per-category eval set, both deterministic."""
    train = build_dataset(tokenizer_dir, root / "train", max_length=64, num_parts=2)
    # SFT-like eval data (one document per sample) so plain transformers can recompute its loss.
    evaluation = build_dataset(tokenizer_dir, root / "eval", max_length=64, num_parts=1, kind="sft",
                               categories={"en": ENGLISH_EVAL, "zh": CHINESE_EVAL})
    return {"train": train, "eval": evaluation}


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_tokenizer_dir):
    return build_reference_data(tmp_path_factory.mktemp("train_data"), tiny_tokenizer_dir)


ENGLISH_EVAL = ["The baker opens her shop at six and sells bread until the shelves are empty.",
                "A small boat crossed the lake while the sun went down behind the hills."]
CHINESE_EVAL = ["小船在湖面上慢慢地划过。", "面包店每天早上六点开门。"]


def base_args(model_dir, data, out: Path, **overrides) -> list[str]:
    args = {"--pretrained": model_dir, "--dataset": data["train"], "--plugin": "ddp", "--max_length": 64,
            "--micro_batch_size": 2, "--lr": 1e-2, "--save_dir": out / "ckpt", "--tensorboard_dir": out / "tb",
            "--config_file": out / "config.json", "--padding_mode": "longest", "--max_steps": 6, "--seed": 5,
            "--save_interval": 1000}
    args.update(overrides)
    flat = []
    for k, v in args.items():
        if v is True:
            flat.append(k)
        elif v is not None and v is not False:
            flat += [k, str(v)]
    return flat


def read_metrics(tb_dir: Path) -> tuple[dict[int, dict], list[dict]]:
    rows = [json.loads(line) for line in (tb_dir / "metrics.jsonl").read_text().splitlines()]
    train = {r["step"]: r for r in rows if "loss" in r}
    evals = [r for r in rows if "eval/loss" in r]
    return train, evals


@pytest.fixture(scope="module")
def neft_run(tmp_path_factory, tiny_model_dir, data):
    """6 steps with NEFTune, checkpoints every 2 steps (keep the last 2), eval every 2 steps."""
    out = tmp_path_factory.mktemp("neft_run")
    args = base_args(tiny_model_dir, data, out, **{"--use_neft": True, "--save_interval": 2, "--keep_last": 2,
                                                   "--eval_dataset": data["eval"], "--eval_interval": 2})
    proc = run_distributed(TRAIN, args, timeout=240)
    return out, args, proc


def test_loss_falls_metrics_config_and_checkpoint_layout(neft_run):
    out, _, _ = neft_run
    train, evals = read_metrics(out / "tb")
    assert sorted(train) == [1, 2, 3, 4, 5, 6]
    for row in train.values():
        assert {"step", "loss", "lr", "grad_norm", "tokens_per_s", "tflops", "mfu", "epoch", "elapsed"} <= set(row)
        assert row["tokens_per_s"] > 0 and row["tflops"] > 0 and row["grad_norm"] > 0
    assert train[6]["loss"] < train[1]["loss"] - 0.2, "loss must fall"
    assert [e["step"] for e in evals] == [2, 4, 6]
    assert evals[-1]["eval/loss"] < evals[0]["eval/loss"]
    assert {"eval/loss/en", "eval/loss/zh"} <= set(evals[0])
    assert list((out / "tb").glob("events.out.tfevents.*")), "tensorboard events written"
    config = json.loads((out / "config.json").read_text())
    assert config["plugin"] == "ddp" and config["use_neft"] is True
    # --keep_last 2: only steps 4 and 6 remain; nothing half-written is left around.
    assert sorted(p.name for p in (out / "ckpt").iterdir()) == ["epoch-0_step-4", "epoch-0_step-6"]
    ck = out / "ckpt" / "epoch-0_step-6"
    modeling = {p.name for p in (ck / "modeling").iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors.index.json", "tokenizer.model",
            "tokenizer_config.json"} <= modeling
    assert ("special_tokens_map.json" in modeling) != transformers_5()  # 5 writes none
    assert any(n.endswith(".safetensors") and n.startswith("model-") for n in modeling)
    assert (ck / "optimizer").is_dir() and (ck / "lr_scheduler").exists()
    states = json.loads((ck / "running_states.json").read_text())
    assert states["global_step"] == 6 and states["epoch"] == 0 and states["step_in_epoch"] == 6
    assert states["sampler"]["consumed"] == 12 and len(states["rng_states"]) == 2


def test_resume_continues_exactly(neft_run, tmp_path):
    out, args, _ = neft_run
    args = list(args)
    args[args.index("--save_dir") + 1] = str(tmp_path / "ckpt")
    args[args.index("--tensorboard_dir") + 1] = str(tmp_path / "tb")
    args += ["--load_checkpoint", str(out / "ckpt" / "epoch-0_step-4")]
    proc = run_distributed(TRAIN, args, timeout=240)
    assert "resumed from" in proc.stdout
    assert "Please install" not in proc.stdout  # colossalai's notes on extras for features not in use
    full, full_evals = read_metrics(out / "tb")
    again, again_evals = read_metrics(tmp_path / "tb")
    assert sorted(again) == [5, 6]
    for step in (5, 6):  # NEFTune noise included: RNG, data order, optimizer and schedule all restored
        assert again[step]["loss"] == full[step]["loss"], step
        assert again[step]["lr"] == full[step]["lr"]
    assert again_evals[-1]["eval/loss"] == pytest.approx(full_evals[-1]["eval/loss"], abs=1e-6)


@pytest.mark.parametrize("lost", ["optimizer", "lr_scheduler", "sampler"])
def test_resume_comparison_sees_a_lost_state(neft_run, tmp_path, lost):
    """The exact comparison above fails when a resume loses Adam's states, the schedule or the data position."""
    out, args, _ = neft_run
    args = list(args)
    args[args.index("--save_dir") + 1] = str(tmp_path / "ckpt")
    args[args.index("--tensorboard_dir") + 1] = str(tmp_path / "tb")
    args += ["--load_checkpoint", str(out / "ckpt" / "epoch-0_step-4")]
    run_distributed(REPO_ROOT / "tests" / "scripts" / "train_resume_losing.py", args, timeout=240,
                    env={"RESUME_LOSES": lost})
    full, _ = read_metrics(out / "tb")
    again, _ = read_metrics(tmp_path / "tb")
    assert sorted(again) == [5, 6]
    differs = [again[s]["loss"] != full[s]["loss"] or again[s]["lr"] != full[s]["lr"] for s in (5, 6)]
    assert any(differs), (lost, again, full)


def test_resume_from_weights_only_and_from_the_end_of_an_epoch(neft_run, data, tiny_model_dir, tmp_path):
    """A modeling/ dir restarts the schedule with the trained weights; a checkpoint taken at the last step of an
    epoch resumes at the start of the next epoch, on the same curve as the run that went on."""
    import math

    out, _, _ = neft_run
    weights = run_distributed(TRAIN, base_args(tiny_model_dir, data, tmp_path / "w", **{
        "--load_checkpoint": out / "ckpt" / "epoch-0_step-6" / "modeling", "--max_steps": 2}), timeout=240)
    assert "loaded weights only" in weights.stdout
    fresh, _ = read_metrics(out / "tb")
    again, _ = read_metrics(tmp_path / "w" / "tb")
    assert sorted(again) == [1, 2] and again[1]["lr"] == fresh[1]["lr"]  # the schedule starts over
    assert again[1]["loss"] < fresh[1]["loss"] - 0.3  # from the trained weights, not the pretrained ones
    sequences = json.loads((data["train"] / "summary.json").read_text())["sequences"]
    per_epoch = math.ceil(math.ceil(sequences / 2) / 2)  # 2 ranks, micro-batch 2
    common = {"--num_epochs": 2, "--max_steps": per_epoch + 2, "--save_interval": per_epoch}
    full = run_distributed(TRAIN, base_args(tiny_model_dir, data, tmp_path / "full", **common), timeout=240)
    assert f"({per_epoch} per epoch" in full.stdout
    end_of_epoch = tmp_path / "full" / "ckpt" / f"epoch-0_step-{per_epoch}"
    states = json.loads((end_of_epoch / "running_states.json").read_text())
    assert states["step_in_epoch"] == per_epoch
    resumed = run_distributed(TRAIN, base_args(tiny_model_dir, data, tmp_path / "resumed", **common,
                                               **{"--load_checkpoint": end_of_epoch}), timeout=240)
    assert f"epoch 1, step 0 in epoch, global step {per_epoch}" in resumed.stdout
    a, _ = read_metrics(tmp_path / "full" / "tb")
    b, _ = read_metrics(tmp_path / "resumed" / "tb")
    assert sorted(b) == [per_epoch + 1, per_epoch + 2]
    assert all(b[s]["loss"] == a[s]["loss"] and b[s]["epoch"] == a[s]["epoch"] == 1 for s in b)


def test_saved_modeling_loads_with_plain_transformers_and_matches_eval(neft_run, data):
    """No project import: HF loads model + tokenizer; its loss on the eval set equals the logged eval loss,
    so NEFTune's noise is neither in the saved weights nor in evaluation."""
    out, _, _ = neft_run
    _, evals = read_metrics(out / "tb")
    script = f"""
import sys, json, torch, datasets
from transformers import AutoModelForCausalLM, AutoTokenizer
assert not any(m.startswith("colossal_llama2") for m in sys.modules)
d = {str(out / "ckpt" / "epoch-0_step-6" / "modeling")!r}
tok = AutoTokenizer.from_pretrained(d)
model = AutoModelForCausalLM.from_pretrained(d).eval()
assert model.get_input_embeddings().weight.shape[0] == len(tok)
ds = datasets.load_from_disk({str(data["eval"] / "part-00000")!r})
total = count = 0.0
with torch.no_grad():
    for row in ds:
        ids = torch.tensor([row["input_ids"]]); labels = torch.tensor([row["labels"]])
        n = int((labels[:, 1:] != -100).sum())
        total += model(input_ids=ids, labels=labels).loss.item() * n; count += n
print("EVAL", total / count)
print("SHAPE", tuple(model.get_input_embeddings().weight.shape))
assert not any(m.startswith("colossal_llama2") for m in sys.modules)
"""
    env = dist_helpers.test_env()
    env["PYTHONPATH"] = ""  # the project is not importable from here
    proc = subprocess.run([sys.executable, "-c", script], env=env, cwd="/", capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    hf_eval = float(next(line.split()[1] for line in proc.stdout.splitlines() if line.startswith("EVAL")))
    assert hf_eval == pytest.approx(evals[-1]["eval/loss"], abs=1e-4)


@pytest.fixture(scope="module")
def accumulation_runs(tmp_path_factory, tiny_model_dir, data):
    runs = {}
    for name, mb, acc in (("mb2_acc1", 2, 1), ("mb1_acc2", 1, 2)):
        out = tmp_path_factory.mktemp(name)
        run_distributed(TRAIN, base_args(tiny_model_dir, data, out, **{"--micro_batch_size": mb,
                                                                       "--accumulation_steps": acc,
                                                                       "--max_steps": 3}), timeout=240)
        runs[name] = read_metrics(out / "tb")[0]
    return runs


def test_accumulation_matches_larger_micro_batch(accumulation_runs):
    a, b = accumulation_runs["mb2_acc1"], accumulation_runs["mb1_acc2"]
    assert sorted(a) == sorted(b) == [1, 2, 3]
    for step in a:
        assert b[step]["loss"] == pytest.approx(a[step]["loss"], abs=2e-5), step
        assert b[step]["grad_norm"] == pytest.approx(a[step]["grad_norm"], rel=1e-4), step


def test_neftune_changes_training(neft_run, accumulation_runs):
    neft, _ = read_metrics(neft_run[0] / "tb")
    plain = accumulation_runs["mb2_acc1"]  # same seed, data and batch shape, no NEFTune
    assert all(abs(neft[s]["loss"] - plain[s]["loss"]) > 1e-4 for s in (1, 2, 3))


def test_freeze_keeps_non_embeddings_bit_identical_and_non_finite_loss_stops(tmp_path, tiny_model_dir, data):
    """--freeze_non_embeds_params with an absurd learning rate: step 1 is saved, step 2's loss is not finite."""
    args = base_args(tiny_model_dir, data, tmp_path, **{"--freeze_non_embeds_params": True, "--lr": 1e37, "-w": 0,
                                                        "--save_interval": 1, "--max_steps": 8,
                                                        "--gradient_clipping": 0, "-s": 0})
    proc = run_distributed(TRAIN, args, timeout=240, check=False)
    assert proc.returncode != 0
    assert "at step 2" in proc.stdout and ("loss is nan" in proc.stdout or "loss is inf" in proc.stdout)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["epoch-0_step-1"]
    before = load_file(str(tiny_model_dir / "model.safetensors"))
    modeling = tmp_path / "ckpt" / "epoch-0_step-1" / "modeling"
    after = {}
    for shard in modeling.glob("model-*.safetensors"):
        after.update(load_file(str(shard)))
    assert set(after) == set(before)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"model.embed_tokens.weight", "lm_head.weight"}


def test_sigterm_saves_loadable_checkpoint_and_exits_zero(tmp_path, tiny_model_dir, data):
    args = base_args(tiny_model_dir, data, tmp_path, **{"--max_steps": 0, "--num_epochs": 200,
                                                        "--micro_batch_size": 1})
    metrics = tmp_path / "tb" / "metrics.jsonl"
    code, output = dist_helpers.signal_workers_after(TRAIN, args, metrics, tmp_path / "log.txt")
    assert code == 0, output[-3000:]
    assert "SIGTERM received" in output
    last_step = max(json.loads(line)["step"] for line in metrics.read_text().splitlines())
    ckpts = [p.name for p in (tmp_path / "ckpt").iterdir()]
    assert ckpts == [f"epoch-0_step-{last_step}"] and last_step >= 3  # saved at the step it stopped after
    states = json.loads((tmp_path / "ckpt" / ckpts[0] / "running_states.json").read_text())
    assert states["global_step"] == last_step
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt" / ckpts[0] / "modeling")
    assert model.config.num_hidden_layers == 2


@pytest.mark.parametrize("batch_size", [1, 2])
def test_evaluation_counts_each_sample_once_when_ranks_cannot_split_them_evenly(batch_size):
    """5 samples on 2 ranks: by hand, a = (2 + 4 + 30) / (1 + 1 + 10) = 3, b = (9 + 3) / (3 + 1) = 3, all =
    48 / 16 = 3.0. Batch size 1: counting rank 1's repeated sample 0 again would give a = 38 / 13 and all = 50 / 17.
    Batch size 2 (batches of one category: a[0, 2], a[4], b[1, 3]): the same values from batched forwards."""
    proc = run_distributed(REPO_ROOT / "tests" / "scripts" / "uneven_eval.py", [batch_size], nproc=2, timeout=120)
    values = json.loads(proc.stdout.split("EVAL ")[1].splitlines()[0])
    assert values == pytest.approx({"eval/loss": 3.0, "eval/loss/a": 3.0, "eval/loss/b": 3.0}, abs=1e-12)


def test_resume_on_another_number_of_ranks_keeps_the_schedule_and_the_global_position(neft_run, tmp_path):
    """A checkpoint of 2 ranks x micro-batch 2 resumed on 1 rank x micro-batch 4 (the same global batch): the
    schedule goes on exactly, the data position carries over globally (4 steps x 2 ranks x 2 = 16 samples), and a
    warning says the order differs."""
    out, args, _ = neft_run
    args = list(args)
    args[args.index("--save_dir") + 1] = str(tmp_path / "ckpt")
    args[args.index("--tensorboard_dir") + 1] = str(tmp_path / "tb")
    args[args.index("--micro_batch_size") + 1] = "4"
    args += ["--load_checkpoint", str(out / "ckpt" / "epoch-0_step-4")]
    proc = run_distributed(TRAIN, args, nproc=1, timeout=240)
    assert "sampler restored with a different world size" in proc.stdout
    full, _ = read_metrics(out / "tb")
    again, _ = read_metrics(tmp_path / "tb")
    assert sorted(again) == [5, 6] and all(again[s]["lr"] == full[s]["lr"] for s in (5, 6))
    states = json.loads((tmp_path / "ckpt" / "epoch-0_step-6" / "running_states.json").read_text())
    assert states["sampler"]["num_replicas"] == 1 and states["sampler"]["consumed"] == 16 + 2 * 4
    assert len(states["rng_states"]) == 1
