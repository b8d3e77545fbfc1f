"""`make demo`: the whole pipeline on the bundled demo data, each stage through its real command.

1. build a tiny LLaMA-2-like base (English sentencepiece BPE with byte fallback + a small random LLaMA),
   standing in for a downloaded model;
2. extend its vocabulary with Chinese pieces learned from the demo corpus; compression table before/after;
3. grow the model (mean init);
4. prepare the pretraining and SFT datasets;
5. continual pre-training (embeddings only, then everything), then SFT with NEFTune, via `colossalai run`
   (ddp on 2 CPU ranks here; a GPU plugin where CUDA is available);
6. generate with inference_example.py from the final model;
7. plot the loss curves from metrics.jsonl.

The output directory is wiped and rebuilt on every run (only if it is one the demo made: it carries a
marker file), so each run starts from the same state.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .utils.errors import UserInputError, run_cli
from .utils.launch_env import colossalai_run_env

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_DATA = REPO_ROOT / "examples" / "demo_data"
MARKER = ".colossal_llama2_demo"


def banner(text: str) -> None:
    print(f"\n=== {text}", flush=True)


class Runner:
    """Runs each stage as its own process, echoing the command, and stops the demo on the first failure."""

    def __init__(self, env: dict[str, str]):
        self.env = env

    def __call__(self, cmd: list[str], capture: bool = False) -> str:
        printable = " ".join(str(c) for c in cmd).replace(str(REPO_ROOT) + "/", "")
        print(f"$ {printable}", flush=True)
        proc = subprocess.run([str(c) for c in cmd], cwd=REPO_ROOT, env=self.env, text=True,
                              stdout=subprocess.PIPE if capture else None)
        if proc.returncode != 0:
            raise SystemExit(f"demo: stage failed (exit {proc.returncode}): {printable}")
        return proc.stdout or ""


def prepare_output_dir(out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).exists():
            raise UserInputError(f"{out} exists and was not made by the demo; choose another --output_dir",
                                 "--output_dir")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by `python -m colossal_llama2.demo`; wiped on the next run\n")


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def plot_losses(stages: dict[str, Path], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    offset = 0
    for name, metrics_file in stages.items():
        rows = read_metrics(metrics_file)
        steps = [offset + r["step"] for r in rows]
        ax.plot(steps, [r["loss"] for r in rows], label=name)
        offset = steps[-1] if steps else offset
    ax.set_xlabel("optimizer step (stages in sequence)")
    ax.set_ylabel("training loss")
    ax.set_title("make demo: continual pre-training and SFT of a tiny LLaMA")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output_dir", default="demo_output", help="Where every stage writes (wiped and rebuilt).")
    p.add_argument("--nproc", type=int, default=2, help="Ranks for training (CPU: gloo processes; GPU: GPUs).")
    p.add_argument("--plugin", default=None, help="Booster plugin (default: ddp on CPU, zero2 with CUDA).")
    p.add_argument("--num_new_pieces", type=int, default=700, help="Chinese pieces learned from the corpus.")
    p.add_argument("--max_length", type=int, default=256, help="Training sequence length.")
    return p.parse_args(argv)


@dataclass
class Demo:
    """What every stage needs: where to write, how to run a command, and the training setup."""
    out: Path
    run: Runner
    py: str
    plugin: str
    nproc: int
    cuda: bool
    max_length: int


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    cuda = torch.cuda.is_available()
    out = Path(args.output_dir).resolve()
    prepare_output_dir(out)
    env = dict(colossalai_run_env(), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    demo = Demo(out=out, run=Runner(env), py=sys.executable, plugin=args.plugin or ("zero2" if cuda else "ddp"),
                nproc=min(args.nproc, torch.cuda.device_count()) if cuda else args.nproc, cuda=cuda,
                max_length=args.max_length)
    started = time.time()
    base = base_model(demo)
    tokenizer_dir = extend_vocabulary(demo, base, args.num_new_pieces)
    model_dir = grow_model(demo, base, tokenizer_dir)
    data = prepare_data(demo, model_dir)
    final_model, metrics = train_stages(demo, model_dir, data)
    generations = generate(demo, final_model)
    banner("7/7 loss curves")
    png = out / "loss_curves.png"
    plot_losses(metrics, png)
    write_report(demo, final_model, generations, metrics, started)
    print(f"\nDone in {time.time() - started:.0f} s. Outputs in {out}:")
    for path, what in ((base, "stand-in base model"), (tokenizer_dir, "extended tokenizer"),
                       (model_dir, "grown model"), (data, "prepared datasets"), (out / "checkpoints", "checkpoints"),
                       (final_model, "final model (load with from_pretrained)"), (out / "tensorboard", "metrics"),
                       (png, "loss curves"), (out / "demo_report.json", "summary of this run")):
        print(f"  {what:42s} {path}")
    return 0


def base_model(demo: Demo) -> Path:
    banner("1/7 tiny LLaMA-2-like base model (stand-in for a downloaded one)")
    base = demo.out / "base_model"
    demo.run([demo.py, "-c", "import sys; from colossal_llama2.tiny_base import build_tiny_tokenizer, build_tiny_llama; "
              "t = build_tiny_tokenizer([sys.argv[1]], sys.argv[2], vocab_size=1000); "
              "build_tiny_llama(t, sys.argv[3], hidden_size=128, intermediate_size=352, num_hidden_layers=4, "
              "num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024)",
              DEMO_DATA / "base_english.txt", demo.out / "base_tokenizer", base])
    return base


def extend_vocabulary(demo: Demo, base: Path, num_new_pieces: int) -> Path:
    banner("2/7 extend the vocabulary with Chinese pieces learned from the corpus")
    tokenizer_dir = demo.out / "extended_tokenizer"
    demo.run([demo.py, "colossal_llama2/tokenizer/init_tokenizer.py", "--source_tokenizer_dir", base,
              "--target_tokenizer_dir", tokenizer_dir, "--train_corpus", DEMO_DATA / "pretrain",
              "--num_new_pieces", num_new_pieces])
    demo.run([demo.py, "-m", "colossal_llama2.tokenizer.stats", "--tokenizer_dirs", f"{base},{tokenizer_dir}",
              "--data_input_dirs", DEMO_DATA / "pretrain"])
    return tokenizer_dir


def grow_model(demo: Demo, base: Path, tokenizer_dir: Path) -> Path:
    banner("3/7 grow embedding and lm_head (new rows: mean of the old ones)")
    model_dir = demo.out / "extended_model"
    demo.run([demo.py, "colossal_llama2/model/init_model.py", "--source_model_and_tokenizer_path", base,
              "--target_tokenizer_path", tokenizer_dir, "--target_model_path", model_dir])
    return model_dir


def prepare_data(demo: Demo, model_dir: Path) -> Path:
    banner("4/7 prepare pretraining and SFT datasets")
    data = demo.out / "data"
    for script, kind in (("prepare_pretrain_dataset.py", "pretrain"), ("prepare_sft_dataset.py", "sft")):
        demo.run([demo.py, script, "--data_input_dirs", DEMO_DATA / kind, "--tokenizer_dir", model_dir,
                  "--data_cache_dir", data / f"{kind}_cache", "--data_jsonl_output_dir", data / f"{kind}_jsonl",
                  "--data_arrow_output_dir", data / f"{kind}_arrow", "--max_length", demo.max_length,
                  "--num_spliced_dataset_bins", "2", "--num_proc", "2"])
    return data


TRAINING_STAGES = [  # (name, data kind, extra train.py flags); each stage starts from the previous one's model
    ("pretrain-embeddings", "pretrain", ["--freeze_non_embeds_params", "--lr", "3e-3", "--num_epochs", "1"]),
    ("pretrain-full", "pretrain", ["--lr", "2e-3", "--num_epochs", "4"]),
    ("sft-neftune", "sft", ["--lr", "1e-3", "--num_epochs", "4", "--use_neft"]),
]


def train_stages(demo: Demo, model_dir: Path, data: Path) -> tuple[Path, dict[str, Path]]:
    """Run the training stages through `colossalai run`; returns (final modeling/ dir, metrics file per stage)."""
    banner(f"5/7 training with colossalai run ({demo.plugin}, {demo.nproc} ranks)")
    metrics = {}
    pretrained = model_dir
    for name, kind, extra in TRAINING_STAGES:
        save_dir, tb_dir = demo.out / "checkpoints" / name, demo.out / "tensorboard" / name
        parts = sorted(str(p) for p in (data / f"{kind}_arrow").glob("part-*"))
        demo.run([Path(demo.py).parent / "colossalai", "run", "--nproc_per_node", demo.nproc, "--master_port", "29533",
                  "train.py", "--pretrained", pretrained, "--dataset", *parts, "--plugin", demo.plugin,
                  "--save_dir", save_dir, "--tensorboard_dir", tb_dir,
                  "--config_file", demo.out / "configs" / f"{name}.json", "--max_length", demo.max_length,
                  "--micro_batch_size", "4", "--accumulation_steps", "1", "--warmup_steps", "5",
                  "--save_interval", "100000", "--mixed_precision", "bf16", *extra])
        final = sorted(save_dir.glob("epoch-*_step-*"), key=lambda d: int(d.name.rsplit("-", 1)[1]))[-1]
        pretrained = final / "modeling"
        metrics[name] = tb_dir / "metrics.jsonl"
        rows = read_metrics(metrics[name])
        if rows:
            print(f"{name}: {len(rows)} steps, loss {rows[0]['loss']:.3f} -> {rows[-1]['loss']:.3f}")
    return pretrained, metrics


def generate(demo: Demo, model: Path) -> dict[str, str]:
    banner("6/7 generate from the final model (plain transformers)")
    generations = {}
    for prompt, chat in (("Translate into Chinese: The teacher likes green tea very much.", True),
                         ("把这句话翻译成英文：冬天，老师在图书馆里看书。", True), ("冬天，老师", False)):
        print(f"{'chat turn' if chat else 'plain prompt'}: {prompt!r}")
        text = demo.run([demo.py, "inference_example.py", "--model_path", model,
                         "--device", "cuda:0" if demo.cuda else "cpu", "--max_new_tokens", "32", "--do_sample", "False",
                         "--input_txt", prompt, *(["--chat"] if chat else [])], capture=True)
        generations[prompt] = text.strip()
        print(f"model: {generations[prompt]!r}")
    return generations


def write_report(demo: Demo, final_model: Path, generations: dict, metrics: dict[str, Path], started: float) -> None:
    report = {"final_model": str(final_model), "generations": generations, "seconds": round(time.time() - started, 1),
              "stages": {name: {"steps": len(rows), "first_loss": rows[0]["loss"], "last_loss": rows[-1]["loss"]}
                         for name, rows in ((n, read_metrics(f)) for n, f in metrics.items()) if rows}}
    (demo.out / "demo_report.json").write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")


if __name__ == "__main__":
    run_cli(main)
