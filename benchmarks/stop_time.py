#!/usr/bin/env python
"""Measure the grace time a stop needs: Ctrl-C a real train.py run and time it until every process is gone.

Builds a random-init model of a benchmark shape and a synthetic dataset (as train_benchmark.py does), starts
``python -m colossal_llama2.launch torchrun ... train.py`` in a session of its own, waits for some optimizer
steps, sends SIGINT to the session (a terminal's Ctrl-C) and reports: seconds from the signal to the exit,
the checkpoint's size and save time (train.py's ``saved checkpoint`` line), and the exit status.

    python benchmarks/stop_time.py --shape 7b_8l --plugin zero2 --nproc 1 --save_dir /local/disk/ckpt
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))


def main() -> int:
    from benchmarks.train_benchmark import write_dataset, write_model_dir, SHAPES

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="7b_8l", help=f"model shape: {', '.join(SHAPES)}")
    p.add_argument("--plugin", default="zero2", help="train.py --plugin")
    p.add_argument("--nproc", type=int, default=1, help="GPUs (processes)")
    p.add_argument("--seq_len", type=int, default=4096, help="sequence length")
    p.add_argument("--master_port", type=int, default=29581, help="torchrun master port")
    p.add_argument("--steps_before_stop", type=int, default=4, help="logged steps before the Ctrl-C")
    p.add_argument("--out_dir", default="stop_time", help="model, data, log and metrics")
    p.add_argument("--save_dir", default=None, help="checkpoint dir (default: OUT_DIR/ckpt); use the real disk")
    args = p.parse_args()

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_dir = write_model_dir(args.shape, args.seq_len, out / "model")
    data_dir = write_dataset(out / "data", vocab=SHAPES[args.shape]["vocab_size"], seq_len=args.seq_len,
                             samples=64 * args.nproc, docs_per_sample=1)
    save_dir = Path(args.save_dir or out / "ckpt")
    cmd = [sys.executable, "-m", "colossal_llama2.launch", sys.executable, "-m", "torch.distributed.run",
           "--nproc_per_node", str(args.nproc), "--master_port", str(args.master_port),
           str(REPO_ROOT / "train.py"), "--pretrained", str(model_dir),
           "--random_init", "--dataset", str(data_dir), "--plugin", args.plugin, "--max_length", str(args.seq_len),
           "--mixed_precision", "bf16", "--save_dir", str(save_dir), "--tensorboard_dir", str(out / "tb"),
           "--config_file", str(out / "config.json"), "--save_interval", "100000", "--num_epochs", "100"]
    log = open(out / "log.txt", "w")
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env=dict(os.environ, PYTHONPATH=os.pathsep.join(
                                filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))))
    metrics = out / "tb" / "metrics.jsonl"
    while not metrics.exists() or sum('"loss"' in line for line in metrics.read_text().splitlines()) \
            < args.steps_before_stop:
        if proc.poll() is not None:
            print((out / "log.txt").read_text()[-3000:])
            return 1
        time.sleep(0.2)
    t0 = time.time()
    os.killpg(proc.pid, signal.SIGINT)
    code = proc.wait()
    seconds = time.time() - t0
    text = (out / "log.txt").read_text()
    saved = re.findall(r"saved checkpoint \S+ \(([\d.]+) GB in ([\d.]+) s\)", text)
    result = {"shape": args.shape, "plugin": args.plugin, "nproc": args.nproc, "exit_status": code,
              "seconds_from_signal_to_exit": round(seconds, 1),
              "checkpoint_gb": float(saved[-1][0]) if saved else None,
              "save_seconds": float(saved[-1][1]) if saved else None}
    print("STOP_TIME " + json.dumps(result), flush=True)
    return 0 if code == 0 and saved else 1


if __name__ == "__main__":
    sys.exit(main())
