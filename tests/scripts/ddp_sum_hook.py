"""Under torchrun: DDP with sum_gradients_hook and the loss divided by the world size gives the gradients of
plain DDP (which averages). Rank 0 prints ``MAX_GRAD_DIFF <x> HOOKED <bool>``."""
import os
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP


class Wrapper:  # what a Booster's TorchDDPModel looks like to register_sum_gradients
    def __init__(self, module):
        self.module = module


def main() -> None:
    from colossal_llama2.training.plugins.ddp_speed import register_sum_gradients

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    averaged = DDP(base)
    summed_module = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    summed_module.load_state_dict(base.state_dict())
    summed = DDP(summed_module)
    hooked = register_sum_gradients(Wrapper(summed))
    torch.manual_seed(100 + rank)  # different data per rank
    x = torch.randn(5, 8)
    averaged(x).square().sum().backward()
    (summed(x).square().sum() / world).backward()
    diff = max((a.grad - b.grad).abs().max().item() for a, b in zip(averaged.parameters(), summed.parameters()))
    scale = max(a.grad.abs().max().item() for a in averaged.parameters())
    if rank == 0:
        print(f"MAX_GRAD_DIFF {diff / scale} HOOKED {hooked} NOT_DDP {register_sum_gradients(Wrapper(base))}")
    # Leave without interpreter teardown: torch 2.13's gloo threads sometimes abort it (with or without destroy_process_group) ("terminate called
    # without an active exception", SIGABRT) after the work is done -- seen once in CI.
    dist.barrier()
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
