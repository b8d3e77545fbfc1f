"""--profile_steps: the GPU-busy figure that tells a CPU-bound step from a GPU-bound one."""
import torch

from colossal_llama2.training.profiling import device_busy_us, idle_by_phase, phase


class _Range:
    def __init__(self, start, end):
        self.start, self.end = start, end


class _Event:
    def __init__(self, start, end, cuda=True, name="kernel", annotation=False):
        self.time_range = _Range(start, end)
        self.device_type = torch.autograd.DeviceType.CUDA if cuda else torch.autograd.DeviceType.CPU
        self.name = name
        self.is_user_annotation = annotation


def test_device_busy_is_the_union_of_kernel_intervals():
    events = [_Event(0, 10), _Event(5, 12), _Event(20, 25), _Event(1, 100, cuda=False), _Event(24, 30),
              _Event(26, 27)]
    assert device_busy_us(events) == 12 + 10  # overlaps counted once, CPU events ignored
    assert device_busy_us([]) == 0
    # a record_function range mirrored onto the GPU timeline spans idle time: it is not work
    assert device_busy_us(events + [_Event(0, 30, name="Optimizer.step#HybridAdam.step", annotation=True)]) == 22


def test_gpu_idle_is_charged_to_the_host_phase_it_falls_in():
    kernels = [_Event(0, 10), _Event(14, 20), _Event(30, 40), _Event(41, 50)]  # idle 10-14, 20-30, 40-41
    phases = [_Event(0, 12, cuda=False, name="phase:forward"), _Event(12, 25, cuda=False, name="phase:backward"),
              _Event(27, 45, cuda=False, name="phase:optimizer"),
              _Event(0, 50, name="phase:forward", annotation=True)]  # the GPU mirror of a phase: ignored
    idle = idle_by_phase(kernels + phases)
    assert idle == {"forward": 2, "backward": 2 + 5, "other": 2, "optimizer": 3 + 1}
    assert sum(idle.values()) == 50 - device_busy_us(kernels)


def test_the_phases_reach_the_profiler():
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        with phase("optimizer"):
            torch.ones(3).sum()
    assert any(e.name == "phase:optimizer" for e in prof.events())


def test_device_scalars_read_back_plain_numbers():
    from colossal_llama2.training.step_metrics import DeviceScalars

    scalars = DeviceScalars({"loss": torch.tensor(2.5, dtype=torch.float64) / 2, "grad_norm": None, "lr": 3e-4,
                             "count": torch.tensor(7)})
    assert scalars.read() == {"loss": 1.25, "grad_norm": None, "lr": 3e-4, "count": 7.0}


def test_step_profiler_writes_the_table_for_its_steps_only(tmp_path):
    from colossal_llama2.training.profiling import StepProfiler

    profiler = StepProfiler((2, 3), str(tmp_path), enabled=True)
    for step in range(1, 5):
        profiler.before_step(step)
        with phase("forward"):
            torch.randn(64, 64) @ torch.randn(64, 64)
        profiler.after_step(step)
        assert (tmp_path / "profile.txt").exists() == (step >= 3)
    text = (tmp_path / "profile.txt").read_text()
    assert text.startswith("optimizer steps 2..3 (2), ") and "phase:forward" in text and "aten::mm" in text
