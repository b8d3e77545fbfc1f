"""Does vocabulary extension make continual pre-training better? One command, the project's own stages.

1. An English-only base: a sentencepiece BPE tokenizer learned from the English training text and a LLaMA-style
   model pre-trained on it with train.py.
2. Continual pre-training on the Chinese training text plus an English replay share, four arms with the same
   steps, micro-batch and sequence length (so the same tokens and, up to the vocabulary's share, the same GPU time):
   (a) the base tokenizer; (b) the vocabulary extended with pieces learned from the Chinese training text, new rows
   mean-initialised; (c) the same, subword-mean initialised; (d) like (b) with a first phase that trains only the
   embeddings (``--freeze_non_embeds_params``, as the seed does), then everything.
3. Held-out bits per character (the summed token loss over the characters, in bits: comparable across tokenizers)
   of each language and of every ``--eval_text``, before and after, at each checkpoint (the curve against GPU
   seconds), tokens per character, and greedy generation speed in characters per second through
   inference_example.py's loading path.

    python benchmarks/cpt_quality.py --english_text en.txt --chinese_text zh.txt --size small --out_dir cpt_run
    python benchmarks/cpt_quality.py ... --eval_text my_heldout.txt      # any UTF-8 text, one document per line
    python benchmarks/cpt_quality.py ... --arms a,c                      # a subset of the arms

Every stage is the command a user would run (printed as it runs), so one arm can be rerun alone.
Writes ``results.json``, ``report.md`` and ``bits_per_char.png`` to ``--out_dir``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from colossal_llama2.utils.errors import UserInputError, run_cli  # noqa: E402

# Model and schedule per size. toy: the CPU test; small: 60 M parameters on one GPU, sized to the ~7 M English and
# ~1.7 M Chinese characters that benchmarks/doc_text.py extracts (a larger model would only memorise them).
SIZES = {
    "toy": dict(vocab=600, new_pieces=300, hidden=64, ffn=176, layers=2, heads=4, max_length=128, micro_batch=4,
                base_steps=40, cpt_steps=24, base_lr=3e-3, cpt_lr=2e-3, eval_chars=4000),
    "small": dict(vocab=8000, new_pieces=8000, hidden=640, ffn=1728, layers=10, heads=10, max_length=1024,
                  micro_batch=8, base_steps=1000, cpt_steps=600, base_lr=1e-3, cpt_lr=5e-4, eval_chars=150_000),
}
ARMS = {  # name: (extended vocabulary, init method, share of the steps that trains embeddings only)
    "a_base_vocab": (False, None, 0.0),
    "b_extended_mean": (True, "mean", 0.0),
    "c_extended_subword_mean": (True, "subword_mean", 0.0),
    "d_extended_mean_embeddings_first": (True, "mean", 0.25),
}
CHECKPOINTS_PER_ARM = 4
GENERATION_TOKENS = {"toy": 16, "small": 128}


@dataclass
class Corpus:
    """Documents (one per line) split into training and held-out parts."""
    train: list[str]
    heldout: list[str]

    @classmethod
    def read(cls, path: Path, heldout_chars: int, seed: int, flag: str) -> "Corpus":
        if not path.is_file():
            raise UserInputError(f"{path} does not exist", where=flag)
        docs = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if len(docs) < 4:
            raise UserInputError(f"{path}: needs at least 4 non-empty lines (documents), found {len(docs)}",
                                 where=flag)
        random.Random(seed).shuffle(docs)
        heldout, chars = [], 0
        while docs and chars < heldout_chars and len(heldout) < len(docs) // 2:
            heldout.append(docs.pop())
            chars += len(heldout[-1])
        return cls(train=docs, heldout=heldout)


@dataclass
class Experiment:
    args: argparse.Namespace
    size: dict
    out: Path
    py: str = sys.executable
    cuda: bool = False
    log: list[str] = field(default_factory=list)

    def run(self, cmd: list, stage: str) -> None:
        """One stage as its own process; the command is printed and kept for the report. A stage that finished
        in an earlier invocation with the same ``--out_dir`` is not run again, so an interrupted experiment
        continues where it stopped when the command is repeated."""
        shown = ["python" if c == self.py else str(c).replace(str(REPO_ROOT) + "/", "") for c in cmd]
        printable = shlex.join(shown)  # copy-pasteable, from the repository root
        self.log.append(printable)
        done = self.out / "stages" / f"{stage}.done"
        if done.exists():
            print(f"$ {printable}\n  (finished in an earlier invocation: {done.relative_to(self.out)})", flush=True)
            return
        print(f"$ {printable}", flush=True)
        started = time.time()
        path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))  # keep the user's
        proc = subprocess.run([str(c) for c in cmd], cwd=REPO_ROOT, env=dict(os.environ, PYTHONPATH=path))
        if proc.returncode != 0:
            raise SystemExit(f"cpt_quality: stage failed (exit {proc.returncode}): {printable}")
        done.parent.mkdir(parents=True, exist_ok=True)
        done.write_text(json.dumps({"command": printable, "seconds": round(time.time() - started, 1)}) + "\n",
                        encoding="utf-8")

    def stage_seconds(self) -> dict[str, float]:
        """Wall seconds of every finished stage, whichever invocation ran it."""
        return {f.stem: json.loads(f.read_text())["seconds"] for f in sorted((self.out / "stages").glob("*.done"))}

    def train(self, pretrained: Path, data: Path, name: str, steps: int, lr: float, extra: list[str]) -> Path:
        """train.py on ``data`` for ``steps``; returns the run's save dir (checkpoints epoch-E_step-S)."""
        save_dir = self.out / "runs" / name
        if not (self.out / "stages" / f"train-{name}.done").exists():
            shutil.rmtree(save_dir, ignore_errors=True)  # what an interrupted invocation left: start the run again
        nproc = self.args.nproc or 1
        self.run([self.py, "-m", "torch.distributed.run", "--nproc_per_node", nproc, "--master_port",
                  self.args.master_port, "train.py", "--pretrained", pretrained, "--dataset", data,
                  "--plugin", self.args.plugin or ("zero2" if self.cuda else "ddp"), "--max_length",
                  self.size["max_length"], "--micro_batch_size", self.size["micro_batch"], "--max_steps", steps,
                  "--num_epochs", 1000, "--lr", lr, "--warmup_steps", max(1, steps // 20), "--save_interval",
                  max(1, steps // CHECKPOINTS_PER_ARM), "--save_dir", save_dir, "--tensorboard_dir", save_dir / "tb",
                  "--config_file", save_dir / "config.json", "--seed", self.args.seed, *extra], stage=f"train-{name}")
        return save_dir


def write_jsonl(path: Path, docs: list[tuple[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for category, text in docs:
            f.write(json.dumps({"source": "", "target": text, "category": category}, ensure_ascii=False) + "\n")
    return path.parent


def prepare(exp: Experiment, tokenizer_dir: Path, docs: list[tuple[str, str]], name: str) -> Path:
    """prepare_pretrain_dataset.py over ``docs`` ((category, text) pairs) with one tokenizer."""
    raw = write_jsonl(exp.out / "data" / name / "raw" / "docs.jsonl", docs)
    arrow = exp.out / "data" / name / "arrow"
    exp.run([exp.py, "prepare_pretrain_dataset.py", "--data_input_dirs", raw, "--tokenizer_dir", tokenizer_dir,
             "--data_cache_dir", exp.out / "data" / name / "cache", "--data_arrow_output_dir", arrow,
             "--max_length", exp.size["max_length"], "--num_spliced_dataset_bins", 1, "--num_proc", 1,
             "--overwrite"], stage=f"prepare-{name}")
    return arrow


def build_base(exp: Experiment, english: Corpus) -> Path:
    """English tokenizer, a random LLaMA-style model, then train.py on the English text."""
    corpus = exp.out / "data" / "english_train.txt"
    corpus.parent.mkdir(parents=True, exist_ok=True)
    corpus.write_text("\n".join(english.train), encoding="utf-8")
    s = exp.size
    exp.run([exp.py, "-c", "import sys; from colossal_llama2.tiny_base import build_tiny_tokenizer, build_tiny_llama; "
             "t = build_tiny_tokenizer([sys.argv[1]], sys.argv[2], vocab_size=int(sys.argv[4])); "
             "build_tiny_llama(t, sys.argv[3], hidden_size=int(sys.argv[5]), intermediate_size=int(sys.argv[6]), "
             "num_hidden_layers=int(sys.argv[7]), num_attention_heads=int(sys.argv[8]), "
             "num_key_value_heads=int(sys.argv[8]), max_position_embeddings=int(sys.argv[9]))",
             corpus, exp.out / "base_tokenizer", exp.out / "base_random", s["vocab"], s["hidden"], s["ffn"],
             s["layers"], s["heads"], s["max_length"]], stage="base-init")
    data = prepare(exp, exp.out / "base_tokenizer", [("en", d) for d in english.train], "base_english")
    runs = exp.train(exp.out / "base_random", data, "base", s["base_steps"], s["base_lr"], [])
    return last_checkpoint(runs) / "modeling"


def extend(exp: Experiment, base: Path, chinese: Corpus) -> Path:
    """init_tokenizer.py: pieces learned from the Chinese training text only."""
    corpus = exp.out / "data" / "chinese_train"
    write_jsonl(corpus / "docs.jsonl", [("zh", d) for d in chinese.train])
    target = exp.out / "extended_tokenizer"
    exp.run([exp.py, "colossal_llama2/tokenizer/init_tokenizer.py", "--source_tokenizer_dir", base,
             "--target_tokenizer_dir", target, "--train_corpus", corpus, "--num_new_pieces", exp.size["new_pieces"],
             "--overwrite"], stage="extend-tokenizer")
    return target


def grow(exp: Experiment, base: Path, tokenizer: Path, init: str) -> Path:
    target = exp.out / f"extended_model_{init}"
    exp.run([exp.py, "colossal_llama2/model/init_model.py", "--source_model_and_tokenizer_path", base,
             "--target_tokenizer_path", tokenizer, "--target_model_path", target, "--init_method", init,
             "--overwrite"], stage=f"grow-{init}")
    return target


def checkpoints(save_dir: Path) -> list[Path]:
    return sorted(save_dir.glob("epoch-*_step-*"), key=lambda d: int(d.name.rsplit("-", 1)[1]))


def last_checkpoint(save_dir: Path) -> Path:
    found = checkpoints(save_dir)
    if not found:
        raise SystemExit(f"cpt_quality: no checkpoint in {save_dir}")
    return found[-1]


def elapsed_at(save_dir: Path) -> dict[int, float]:
    """Training seconds (train.py's ``elapsed``) at each logged step of a run."""
    rows = [json.loads(line) for line in (save_dir / "tb" / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["elapsed"] for r in rows if "loss" in r and "elapsed" in r}


def run_arm(exp: Experiment, name: str, model: Path, data: Path) -> list[tuple[float, Path]]:
    """One continual pre-training arm; returns (training seconds so far, modeling dir) at each checkpoint."""
    _, _, embeddings_share = ARMS[name]
    steps, lr = exp.size["cpt_steps"], exp.size["cpt_lr"]
    points, offset = [], 0.0
    phases = [(f"{name}-embeddings", round(steps * embeddings_share), ["--freeze_non_embeds_params"])] \
        if embeddings_share else []
    phases.append((name, steps - sum(p[1] for p in phases), []))
    for run_name, run_steps, extra in phases:
        save_dir = exp.train(model, data, run_name, run_steps, lr, extra)
        seconds = elapsed_at(save_dir)
        for ckpt in checkpoints(save_dir):
            step = int(ckpt.name.rsplit("-", 1)[1])
            points.append((offset + seconds.get(step, 0.0), ckpt / "modeling"))
            shutil.rmtree(ckpt / "optimizer", ignore_errors=True)  # only the weights are evaluated
        offset += seconds[max(seconds)] if seconds else 0.0
        model = last_checkpoint(save_dir) / "modeling"
    return points


def load(model_dir: Path, device: str):
    from colossal_llama2.inference import load_model_and_tokenizer

    return load_model_and_tokenizer(str(model_dir), device)


def bits_per_char(model, tokenizer, texts: list[str], max_length: int, batch_tokens: int = 8192) -> float:
    """Summed next-token loss over every token after the first of each document (chunks of ``max_length`` that
    overlap by one token, so each token is predicted once), divided by the documents' characters, in bits.
    Chunks of similar length are batched, right-padded; the padding comes after every real token of its row, so
    causal attention keeps it out of their predictions, and its positions are left out of the sum."""
    import torch

    device = next(model.parameters()).device
    chunks, chars = [], 0
    for text in texts:
        ids = tokenizer(text)["input_ids"]
        chars += len(text)
        chunks += [ids[start:start + max_length] for start in range(0, len(ids) - 1, max_length - 1)
                   if len(ids[start:start + max_length]) >= 2]
    chunks.sort(key=len)
    nats = 0.0
    with torch.no_grad():
        while chunks:
            width = len(chunks[-1])
            rows = min(len(chunks), max(1, batch_tokens // width))
            batch, chunks = chunks[-rows:], chunks[:-rows]
            ids = torch.zeros(len(batch), width, dtype=torch.long)
            labels = torch.full((len(batch), width), -100, dtype=torch.long)
            for row, chunk in enumerate(batch):
                ids[row, :len(chunk)] = torch.tensor(chunk)
                labels[row, :len(chunk)] = ids[row, :len(chunk)]
            ids, labels = ids.to(device), labels.to(device)
            logits = model(ids).logits.float()
            nats += torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                                      labels[:, 1:].reshape(-1), ignore_index=-100,
                                                      reduction="sum").item()
    return nats / math.log(2) / max(chars, 1)


def tokens_per_char(tokenizer, texts: list[str]) -> float:
    tokens = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
    return tokens / max(sum(len(t) for t in texts), 1)


def generation_chars_per_s(model, tokenizer, prompt: str, new_tokens: int) -> float:
    """Greedy generation of exactly ``new_tokens`` (after one warm-up call): characters of new text per second."""
    import torch

    inputs = tokenizer(prompt, return_tensors="pt").to(next(model.parameters()).device)
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                  pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    model.generate(**inputs, **{**kwargs, "max_new_tokens": 2, "min_new_tokens": 2})
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    started = time.perf_counter()
    out = model.generate(**inputs, **kwargs)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    text = tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    return len(text) / seconds


def evaluate(exp: Experiment, model_dir: Path, sets: dict[str, list[str]], generate: bool = False) -> dict:
    """bits/char of every held-out set and tokens/char; generation speed on a Chinese prompt if asked."""
    device = "cuda:0" if exp.cuda else "cpu"
    model, tokenizer = load(model_dir, device)
    result = {f"bits_per_char/{k}": round(bits_per_char(model, tokenizer, v, exp.size["max_length"]), 4)
              for k, v in sets.items()}
    result.update({f"tokens_per_char/{k}": round(tokens_per_char(tokenizer, v), 4) for k, v in sets.items()})
    if generate:
        prompt = sets["zh"][0][:16]
        result["generation_chars_per_s/zh"] = round(
            generation_chars_per_s(model, tokenizer, prompt, GENERATION_TOKENS[exp.args.size]), 1)
    result["vocab_size"] = len(tokenizer)
    del model
    return result


def cpt_docs(english: Corpus, chinese: Corpus, replay: float, seed: int) -> list[tuple[str, str]]:
    """The Chinese training documents plus English ones worth ``replay`` of their characters, shuffled."""
    target = replay * sum(len(d) for d in chinese.train)
    english_docs, chars = [], 0
    for doc in english.train:
        if chars >= target:
            break
        english_docs.append(doc)
        chars += len(doc)
    docs = [("zh", d) for d in chinese.train] + [("en", d) for d in english_docs]
    random.Random(seed).shuffle(docs)
    return docs


def arm_models(exp: Experiment, base: Path, extended_tokenizer: Path) -> dict[str, Path]:
    """The starting model of each arm: the base itself, or the base grown to the extended vocabulary."""
    grown = {}
    models = {}
    for name in exp.args.arms:
        extended, init, _ = ARMS[name]
        if extended and init not in grown:
            grown[init] = grow(exp, base, extended_tokenizer, init)
        models[name] = grown[init] if extended else base
    return models


def run_arms(exp: Experiment, base: Path, before: dict, extended_tokenizer: Path, docs, sets) -> dict[str, dict]:
    """Every arm trained, then evaluated at its start (second 0) and at each of its checkpoints (the last one also
    for generation)."""
    data = {False: prepare(exp, base, docs, "cpt_base_vocab"),
            True: prepare(exp, extended_tokenizer, docs, "cpt_extended_vocab")}
    starts = {str(base): before}
    results = {}
    for name, model in arm_models(exp, base, extended_tokenizer).items():
        if str(model) not in starts:
            starts[str(model)] = evaluate(exp, model, sets)
        start = {k: v for k, v in starts[str(model)].items() if not k.startswith("generation")}
        points = run_arm(exp, name, model, data[ARMS[name][0]])
        curve = [{"seconds": 0.0, **start}]
        curve += [{"seconds": round(s, 2), **evaluate(exp, m, sets, generate=(i == len(points) - 1))}
                  for i, (s, m) in enumerate(points)]
        results[name] = {"curve": curve, "final": curve[-1], "model": str(points[-1][1])}
    return results


def at_seconds(curve: list[dict], key: str, seconds: float) -> float:
    """``key`` on a piecewise-linear curve (points at increasing training seconds) at ``seconds``."""
    for a, b in zip(curve, curve[1:]):
        if a["seconds"] <= seconds <= b["seconds"]:
            span = b["seconds"] - a["seconds"]
            share = (seconds - a["seconds"]) / span if span else 1.0
            return a[key] + share * (b[key] - a[key])
    raise ValueError(f"{seconds} s lies outside the curve ({curve[0]['seconds']}-{curve[-1]['seconds']} s)")


def equal_time(arms: dict, names: list[str]) -> tuple[float, dict[str, dict[str, float]]]:
    """Every arm's bits/char at the training seconds of the arm that finished first."""
    seconds = min(arm["final"]["seconds"] for arm in arms.values())
    return seconds, {name: {k: at_seconds(arm["curve"], f"bits_per_char/{k}", seconds) for k in names}
                     for name, arm in arms.items()}


def report(exp: Experiment, before: dict, arms: dict, sets: dict[str, list[str]], english: Corpus,
           chinese: Corpus) -> str:
    names = list(sets)
    header = ("| model | " + " | ".join(f"bits/char {k}" for k in names) + " | " +
              " | ".join(f"tokens/char {k}" for k in names) + " | training s | generation chars/s (zh) |")
    lines = [f"Data: English {sum(map(len, english.train)):,} training / {sum(map(len, english.heldout)):,} held-out "
             f"characters; Chinese {sum(map(len, chinese.train)):,} / {sum(map(len, chinese.heldout)):,}. "
             f"Size preset `{exp.args.size}` ({exp.size}); replay share {exp.args.replay}.", "", header,
             "|" + "---|" * (2 * len(names) + 3)]

    def row(label, r, seconds):
        return (f"| {label} | " + " | ".join(f"{r[f'bits_per_char/{k}']:.3f}" for k in names) + " | " +
                " | ".join(f"{r[f'tokens_per_char/{k}']:.3f}" for k in names) +
                f" | {seconds} | {r.get('generation_chars_per_s/zh', '')} |")
    lines.append(row("English base (before)", before, ""))
    for name, result in arms.items():
        lines.append(row(name, result["final"], f"{result['final']['seconds']:.0f}"))
    seconds, same_time = equal_time(arms, names)
    lines += ["", f"At equal training seconds ({seconds:.0f} s, the arm that finished first; linear between "
              "checkpoints):", "", "| model | " + " | ".join(f"bits/char {k}" for k in names) + " |",
              "|" + "---|" * (len(names) + 1)]
    lines += [f"| {name} | " + " | ".join(f"{v[k]:.3f}" for k in names) + " |" for name, v in same_time.items()]
    stages = exp.stage_seconds()
    lines += ["", f"The stages took {sum(stages.values()):.0f} s of wall time (the training runs "
              f"{sum(v for k, v in stages.items() if k.startswith('train-')):.0f} s, launches included); "
              "evaluation comes on top.", "",
              "Every arm: the same steps, micro-batch and sequence length, so the same tokens; the seconds are "
              "train.py's own. Commands, in order:", "", "```bash", *dict.fromkeys(exp.log), "```"]
    return "\n".join(lines)


def plot(arms: dict, png: Path, languages: tuple[str, ...] = ("zh", "en")) -> None:
    """One panel per language: held-out bits/char against training seconds. The y axis spans the checkpoints
    and the starts near them (a start far above them is written in the legend) so that the arms can be told
    apart."""
    try:
        import matplotlib
    except ImportError:
        print(f"cpt_quality: matplotlib is not installed, so {png.name} was not drawn; install it and run "
              f"`python benchmarks/cpt_quality.py --plot_only --out_dir {png.parent}`", flush=True)
        return

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(languages), figsize=(6 * len(languages), 4.5))
    for ax, language in zip(axes, languages):
        key = f"bits_per_char/{language}"
        trained = [p[key] for arm in arms.values() for p in arm["curve"][1:]]
        for name, result in arms.items():
            curve = result["curve"]
            ax.plot([p["seconds"] for p in curve], [p[key] for p in curve], marker="o",
                    label=f"{name} (start {curve[0][key]:.2f})")
        span = max(trained) - min(trained)
        starts = [arm["curve"][0][key] for arm in arms.values()]
        shown = trained + [v for v in starts if min(trained) - span <= v <= max(trained) + span]
        span = max(shown) - min(shown)
        ax.set_ylim(min(shown) - 0.08 * span, max(shown) + 0.08 * span)
        ax.set_xlabel("training seconds (continual pre-training)")
        ax.set_ylabel(f"held-out {language} bits per character")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--english_text", type=Path, help="English text, one document per line (UTF-8); required")
    p.add_argument("--chinese_text", type=Path, help="Chinese text, one document per line (UTF-8); required")
    p.add_argument("--eval_text", action="append", type=Path, default=[],
                   help="an extra held-out set (any UTF-8 text, one document per line), reported beside the others; "
                        "may be given several times")
    p.add_argument("--size", default="toy", choices=SIZES, help="model and schedule preset (toy: CPU tests)")
    p.add_argument("--replay", type=float, default=0.25,
                   help="English characters in the continual pre-training data, as a share of the Chinese ones")
    p.add_argument("--plugin", default=None, help="train.py --plugin (default: zero2 on GPU, ddp on CPU)")
    p.add_argument("--nproc", type=int, default=None, help="ranks (GPUs, or CPU processes) per training run")
    p.add_argument("--master_port", type=int, default=29571, help="torchrun master port")
    p.add_argument("--seed", type=int, default=0, help="seed of the held-out split, the data order and training")
    p.add_argument("--out_dir", type=Path, default=Path("cpt_quality_run"),
                   help="where everything is written; repeating the command with the same directory skips the "
                        "stages that finished")
    p.add_argument("--arms", default="a,b,c,d",
                   help="the arms to run, by letter or name, comma-separated: " + ", ".join(ARMS))
    p.add_argument("--plot_only", action="store_true",
                   help="only draw bits_per_char.png from the results.json already in --out_dir")
    args = p.parse_args(argv)
    by_letter = {name[0]: name for name in ARMS}
    arms = [by_letter.get(a.strip(), a.strip()) for a in args.arms.split(",") if a.strip()]
    unknown = [a for a in arms if a not in ARMS]
    if unknown or not arms:
        raise UserInputError(f"unknown arm(s) {', '.join(unknown) or '(none given)'}; the arms are "
                             f"{', '.join(ARMS)}", where="--arms")
    args.arms = list(dict.fromkeys(arms))
    if not args.plot_only:
        for flag in ("english_text", "chinese_text"):
            if getattr(args, flag) is None:
                raise UserInputError("is required", where=f"--{flag}")
    return args


def main(argv=None) -> int:
    import torch

    args = parse_args(argv)
    if args.plot_only:
        results = args.out_dir / "results.json"
        if not results.is_file():
            raise UserInputError(f"{results} does not exist: run the experiment first", where="--out_dir")
        plot(json.loads(results.read_text())["arms"], args.out_dir / "bits_per_char.png")
        return 0
    size = SIZES[args.size]
    if not 0 <= args.replay <= 10:
        raise UserInputError("must be between 0 and 10", where="--replay")
    english = Corpus.read(args.english_text, size["eval_chars"], args.seed, "--english_text")
    chinese = Corpus.read(args.chinese_text, size["eval_chars"], args.seed, "--chinese_text")
    sets = {"zh": chinese.heldout, "en": english.heldout}
    for path in args.eval_text:
        if not path.is_file():
            raise UserInputError(f"{path} does not exist", where="--eval_text")
        docs = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not docs:
            raise UserInputError(f"{path} holds no non-empty line", where="--eval_text")
        sets[path.stem] = docs
    args.out_dir.mkdir(parents=True, exist_ok=True)
    exp = Experiment(args=args, size=size, out=args.out_dir.resolve(), cuda=torch.cuda.is_available())
    started = time.time()
    base = build_base(exp, english)
    before = evaluate(exp, base, sets, generate=True)
    extended_tokenizer = extend(exp, base, chinese)
    arms = run_arms(exp, base, before, extended_tokenizer, cpt_docs(english, chinese, args.replay, args.seed), sets)
    table = report(exp, before, arms, sets, english, chinese)
    (exp.out / "report.md").write_text(table + "\n", encoding="utf-8")
    (exp.out / "results.json").write_text(json.dumps({"before": before, "arms": arms, "size": args.size,
                                                      "stage_seconds": exp.stage_seconds(),
                                                      "invocation_seconds": round(time.time() - started, 1)},
                                                     indent=2))
    plot(arms, exp.out / "bits_per_char.png")
    print("\n" + table.split("\n\nEvery arm")[0], flush=True)
    return 0


if __name__ == "__main__":
    run_cli(main)
