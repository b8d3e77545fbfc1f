"""Per-step metrics without stalling the GPU.

Reading a CUDA value on the host (``.item()``, ``float(tensor)``) waits for *every* kernel queued before it,
so a loop that reads the loss at the end of each step drains the GPU's queue once per step: the next step's
first kernels are issued to an idle GPU, and the forward pass (many small kernels issued from Python) then
runs at the host's pace. Profiled on one H100, the GPU was busy 88 ms of a 105 ms ddp step.

``DeviceScalars`` instead copies a step's scalars to pinned host memory asynchronously and records an event;
the loop reads them one step later, after it has queued the next step, when the GPU is long past them.
Whatever needs the values at once (a checkpoint, an evaluation, the end) reads them first.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .metrics import MetricsWriter


class DeviceScalars:
    """Scalars (0-d tensors on any device, or plain numbers/None) captured now, read later."""

    def __init__(self, values: dict[str, torch.Tensor | float | int | None]):
        # host tensors cost nothing to read: only CUDA ones take the asynchronous path
        self.plain = {k: (float(v) if isinstance(v, torch.Tensor) else v) for k, v in values.items()
                      if not (isinstance(v, torch.Tensor) and v.is_cuda)}
        self.keys = [k for k, v in values.items() if isinstance(v, torch.Tensor) and v.is_cuda]
        self.event = None
        self.host = None
        if not self.keys:
            return
        stacked = torch.stack([values[k].detach().reshape(()).to(torch.float64) for k in self.keys])
        self.host = torch.empty(stacked.shape, dtype=torch.float64, pin_memory=True)
        self.host.copy_(stacked, non_blocking=True)
        self.event = torch.cuda.Event()
        self.event.record()

    def read(self) -> dict[str, float | int | None]:
        """The values as Python numbers; waits only for the work queued before this object was made."""
        if self.event is not None:
            self.event.synchronize()
        out = dict(self.plain)
        if self.host is not None:
            out.update(zip(self.keys, self.host.tolist()))
        return out


class NonFiniteLoss(RuntimeError):
    pass


@dataclass
class StepRecord:
    """One finished optimizer step: host-side facts now, device scalars (loss, tokens, ...) read later."""
    step: int
    epoch: int
    lr: float
    seconds: float  # wall time of the step as queued by the host
    elapsed: float  # since training started
    scalars: DeviceScalars


class StepReporter:
    """Logs every optimizer step one step late, so that reading its loss never drains the GPU's queue.

    ``push`` hands over a finished step and reports the one before it; ``flush`` reports the held step
    now (before a save, an evaluation, a stop or the end). Reporting raises NonFiniteLoss for a NaN/inf
    loss and returns the step's values (``stop``: the all-reduced stop flag among them).
    """

    def __init__(self, metrics: MetricsWriter, *, total_steps: int, initial_step: int, enabled: bool,
                 flops_per_token: float, peak_tflops: float | None, world_size: int, save_dir: str):
        from tqdm import tqdm

        self.metrics = metrics
        self.bar = tqdm(total=total_steps, initial=initial_step, disable=not enabled, desc="train",
                        dynamic_ncols=True)
        self.flops_per_token = flops_per_token
        self.peak_tflops = peak_tflops
        self.world_size = world_size
        self.save_dir = save_dir
        self.pending: StepRecord | None = None
        self.last_loss: tuple[int, float] | None = None  # (step, loss) of the last step reported

    def push(self, record: StepRecord) -> dict | None:
        values = self.flush()  # the previous step: its values arrived while this one was queued
        self.pending = record
        return values

    def flush(self) -> dict | None:
        if self.pending is None:
            return None
        record, self.pending = self.pending, None
        return self._report(record)

    def _report(self, record: StepRecord) -> dict:
        values = record.scalars.read()
        loss = values["loss"]
        if not math.isfinite(loss):
            raise NonFiniteLoss(f"loss is {loss} at step {record.step} (epoch {record.epoch}); stopping. "
                                f"The last good checkpoint is kept in {self.save_dir}")
        tokens_per_s = values["input_tokens"] / max(record.seconds, 1e-9)
        tflops = self.flops_per_token * tokens_per_s / 1e12
        self.metrics.log(record.step, {
            "loss": loss, "lr": record.lr, "grad_norm": values["grad_norm"], "tokens_per_s": tokens_per_s,
            "tflops": tflops, "mfu": tflops / (self.peak_tflops * self.world_size) if self.peak_tflops else None,
            "epoch": record.epoch, "elapsed": record.elapsed})
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{record.lr:.2e}")
        self.last_loss = (record.step, loss)
        return values

    def close(self) -> None:
        self.bar.close()
        self.metrics.close()
