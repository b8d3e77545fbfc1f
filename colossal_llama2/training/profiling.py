"""--profile_steps FIRST:LAST: where a training step's time goes, as a torch.profiler table.

Rank 0 writes ``profile.txt`` (operators sorted by total GPU time, or CPU time without CUDA) and a
Chrome trace ``profile_trace.json`` to the tensorboard directory. On CUDA the header also says how long the
GPU sat idle and what the host was doing meanwhile: the training loop marks its phases (``phase`` below:
batches, forward, backward, optimizer, report), and each idle stretch is charged to the phase it fell in.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from ..utils.logging import get_logger

logger = get_logger(__name__)

PHASE_PREFIX = "phase:"


def phase(name: str):
    """Mark a phase of the training step for the profiler (a no-op costing ~1 us while it is not running)."""
    return torch.profiler.record_function(PHASE_PREFIX + name)


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
        header = f"optimizer steps {self.first}..{self.last} ({steps}), {wall_us / steps / 1e3:.1f} ms per step"
        if cuda:
            events = self.profiler.events()
            intervals = busy_intervals(events)
            busy = sum(end - start for start, end in intervals)
            # Below ~95%, the GPU waits for the host (Python, launches, syncs): fusing kernels won't help there.
            header += (f"; GPU busy {busy / steps / 1e3:.1f} ms per step "
                       f"({100 * busy / wall_us:.1f}% of the wall time; the rest it waits for the host)")
            idle = idle_by_phase(events, intervals)
            header += "\nGPU idle per step, by what the host was doing: " + ", ".join(
                f"{name} {us / steps / 1e3:.1f} ms" for name, us in sorted(idle.items(), key=lambda kv: -kv[1]))
        (self.out_dir / "profile.txt").write_text(f"{header}\n{table}\n")
        logger.info("%s", header)
        self.profiler.export_chrome_trace(str(self.out_dir / "profile_trace.json"))
        logger.info("profile of steps %d..%d written to %s", self.first, self.last, self.out_dir / "profile.txt")
        self.profiler = None


def _is_device(event) -> bool:
    """A kernel or copy on the GPU; not a user annotation (``record_function`` ranges, torch.optim's
    ``Optimizer.step#...``), which the profiler mirrors onto the GPU timeline spanning idle time too."""
    return (getattr(event, "device_type", None) == torch.autograd.DeviceType.CUDA and event.time_range.end > 0
            and not getattr(event, "is_user_annotation", False))


def busy_intervals(events) -> list[tuple[float, float]]:
    """The union of the GPU kernels' and copies' intervals, as sorted disjoint (start, end) pairs in us."""
    merged: list[list[float]] = []
    for start, end in sorted((e.time_range.start, e.time_range.end) for e in events if _is_device(e)):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(start, end) for start, end in merged]


def device_busy_us(events) -> float:
    """Microseconds during which at least one GPU kernel or copy ran (union of their intervals)."""
    return sum(end - start for start, end in busy_intervals(events))


def idle_by_phase(events, busy: list[tuple[float, float]] | None = None) -> dict[str, float]:
    """Microseconds the GPU was idle between its first and last kernel, charged to the host-side phase
    (``phase(...)`` ranges) that was running then; "other" where none was. ``busy``: ``busy_intervals(events)``
    when the caller has it already."""
    busy = busy_intervals(events) if busy is None else busy
    phases = sorted((e.time_range.start, e.time_range.end, e.name[len(PHASE_PREFIX):]) for e in events
                    if getattr(e, "device_type", None) == torch.autograd.DeviceType.CPU
                    and e.name.startswith(PHASE_PREFIX))
    idle: dict[str, float] = {}
    for (_, gap_start), (gap_end, _) in zip(busy, busy[1:]):
        charged = 0.0
        for start, end, name in phases:
            overlap = min(end, gap_end) - max(start, gap_start)
            if overlap > 0:
                idle[name] = idle.get(name, 0.0) + overlap
                charged += overlap
        if gap_end - gap_start - charged > 0:
            idle["other"] = idle.get("other", 0.0) + gap_end - gap_start - charged
    return idle
