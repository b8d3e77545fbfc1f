"""Training metrics on rank 0: ``metrics.jsonl`` (one JSON object per optimizer step) and the trackers of
``--report_to`` (tensorboard by default; wandb, MLflow: ``trackers.py``).

Throughput: tokens/s counts real (unpadded) input tokens of all ranks. Model FLOPs per token follow the
usual estimate 6·N + 12·layers·hidden·seq (N = parameters; forward+backward, attention included), so
TFLOP/s = flops_per_token · tokens/s; MFU = that / (peak TFLOP/s per device · devices).
"""
from __future__ import annotations

import json
import os
import resource
import sys
from pathlib import Path

import torch

# Published dense bf16/fp16 tensor-core peaks (TFLOP/s, without sparsity) for MFU, matched by substring of the
# device name; the one basis of train.py's logs and benchmarks/train_benchmark.py (--peak_tflops_per_device
# overrides it, e.g. for the PCIe/NVL variants, which are slower than the SXM figures here).
PEAK_TFLOPS = {"H200": 989.4, "H100": 989.4, "H800": 989.4, "A100": 312.0, "A800": 312.0, "L40S": 362.1,
               "A10G": 125.0, "V100": 125.0, "4090": 165.2}


def flops_per_token(num_params: int, num_layers: int, hidden_size: int, seq_len: int) -> float:
    return 6.0 * num_params + 12.0 * num_layers * hidden_size * seq_len


def device_peak_tflops(override: float | None) -> float | None:
    if override:
        return override
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def peak_memory() -> dict:
    """Peak device memory (GiB, this rank) and peak host RSS (GiB, this process)."""
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    host = rss_kib / 2**20 if sys.platform != "darwin" else rss_kib / 2**30
    device = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0
    return {"peak_device_memory_gib": round(device, 3), "peak_host_memory_gib": round(host, 3)}


class MetricsWriter:
    """Writes on rank 0 only (metrics.jsonl and the ``--report_to`` trackers); elsewhere its methods do nothing."""

    def __init__(self, tensorboard_dir: str | os.PathLike, enabled: bool, report_to: list[str] = ("tensorboard",),
                 run_name: str = "run", config: dict | None = None):
        from .trackers import open_trackers

        self.enabled = enabled
        self.trackers = []
        self.jsonl = None
        if enabled:
            Path(tensorboard_dir).mkdir(parents=True, exist_ok=True)
            self.trackers = open_trackers(list(report_to), Path(tensorboard_dir), run_name, config or {})
            self.jsonl = open(Path(tensorboard_dir) / "metrics.jsonl", "a", encoding="utf-8")

    def log(self, step: int, values: dict) -> None:
        if not self.enabled:
            return
        for tracker in self.trackers:
            tracker.log(step, values)
        self.jsonl.write(json.dumps({"step": step, **values}) + "\n")
        self.jsonl.flush()

    def close(self) -> None:
        if self.enabled:
            for tracker in self.trackers:
                tracker.close()
            self.jsonl.close()
