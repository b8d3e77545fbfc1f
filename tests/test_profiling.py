"""--profile_steps: the GPU-busy figure that tells a CPU-bound step from a GPU-bound one."""
import torch

from colossal_llama2.training.profiling import device_busy_us


class _Range:
    def __init__(self, start, end):
        self.start, self.end = start, end


class _Event:
    def __init__(self, start, end, cuda=True):
        self.time_range = _Range(start, end)
        self.device_type = torch.autograd.DeviceType.CUDA if cuda else torch.autograd.DeviceType.CPU


def test_device_busy_is_the_union_of_kernel_intervals():
    events = [_Event(0, 10), _Event(5, 12), _Event(20, 25), _Event(1, 100, cuda=False), _Event(24, 30),
              _Event(26, 27)]
    assert device_busy_us(events) == 12 + 10  # overlaps counted once, CPU events ignored
    assert device_busy_us([]) == 0


def test_device_scalars_read_back_plain_numbers():
    from colossal_llama2.training.step_metrics import DeviceScalars

    scalars = DeviceScalars({"loss": torch.tensor(2.5, dtype=torch.float64) / 2, "grad_norm": None, "lr": 3e-4,
                             "count": torch.tensor(7)})
    assert scalars.read() == {"loss": 1.25, "grad_norm": None, "lr": 3e-4, "count": 7.0}
