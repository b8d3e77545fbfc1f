"""--profile_steps FIRST:LAST: where a training step's time goes, as a torch.profiler table.

Rank 0 writes ``profile.txt`` (operators sorted by total device time, or CPU time without CUDA) and a
Chrome trace ``profile_trace.json`` to the tensorboard directory.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from ..utils.logging import get_logger

logger = get_logger(__name__)


class StepProfiler:
    def __init__(self, steps: tuple[int, int] | None, out_dir: str, enabled: bool):
        self.first, self.last = steps or (0, -1)
        self.out_dir = Path(out_dir)
        self.enabled = enabled and steps is not None
        self.profiler = None

    def before_step(self, step: int) -> None:
        """``step``: the optimizer step about to run (1-based)."""
        if self.enabled and step == self.first:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if torch.cuda.is_available():
                activities.append(torch.profiler.ProfilerActivity.CUDA)
                torch.cuda.synchronize()
            self.profiler = torch.profiler.profile(activities=activities, record_shapes=False)
            self.profiler.__enter__()
            self.started = time.perf_counter()

    def after_step(self, step: int) -> None:
        if self.profiler is None or step != self.last:
            return
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        wall_us = (time.perf_counter() - self.started) * 1e6
        self.profiler.__exit__(None, None, None)
        cuda = torch.cuda.is_available()
        table = self.profiler.key_averages().table(
            sort_by="cuda_time_total" if cuda else "cpu_time_total", row_limit=40, max_name_column_width=60)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        steps = self.last - self.first + 1
        busy = device_busy_us(self.profiler.events()) if cuda else None
        header = f"optimizer steps {self.first}..{self.last} ({steps}), {wall_us / steps / 1e3:.1f} ms per step"
        if busy is not None:
            # Below ~95%, the GPU waits for the host (Python, launches, syncs): fusing kernels won't help there.
            header += (f"; GPU busy {busy / steps / 1e3:.1f} ms per step "
                       f"({100 * busy / wall_us:.1f}% of the wall time; the rest it waits for the host)")
        (self.out_dir / "profile.txt").write_text(f"{header}\n{table}\n")
        logger.info("%s", header)
        self.profiler.export_chrome_trace(str(self.out_dir / "profile_trace.json"))
        logger.info("profile of steps %d..%d written to %s", self.first, self.last, self.out_dir / "profile.txt")
        self.profiler = None


def device_busy_us(events) -> float:
    """Microseconds during which at least one GPU kernel or copy ran (union of their intervals)."""
    intervals = sorted((e.time_range.start, e.time_range.end) for e in events
                       if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA and e.time_range.end > 0)
    busy, current_start, current_end = 0.0, None, None
    for start, end in intervals:
        if current_end is None or start > current_end:
            if current_end is not None:
                busy += current_end - current_start
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    if current_end is not None:
        busy += current_end - current_start
    return busy
