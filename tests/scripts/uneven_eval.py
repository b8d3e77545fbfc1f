"""Under torchrun (2 gloo ranks): evaluation over 5 samples, which 2 ranks cannot split evenly, in batches of
``argv[1]`` (default 1). A rank short of batches repeats one to keep the collectives matched and must not count it.
Rank 0 prints ``EVAL {json}``."""
import json
import sys

import datasets
import torch
import torch.distributed as dist

from colossal_llama2.training.evaluation import evaluate
from colossal_llama2.training.plugins.factory import DataParallel


class Eval:
    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)


def main() -> None:
    dist.init_process_group("gloo")
    # per sample: a summed token loss and its token count
    rows = {"category": ["a", "b", "a", "b", "a"], "loss_sum": [2.0, 9.0, 4.0, 3.0, 30.0],
            "tokens": [1.0, 3.0, 1.0, 1.0, 10.0]}
    data = Eval(datasets.Dataset.from_dict(rows))
    batch_size = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    values = evaluate(torch.nn.Linear(1, 1), lambda b: (torch.tensor(b["loss_sum"]), torch.tensor(b["tokens"])),
                      data, lambda samples: {k: sum(s[k] for s in samples) for k in ("loss_sum", "tokens")},
                      DataParallel(dist.get_world_size(), dist.get_rank()), torch.device("cpu"), batch_size=batch_size)
    if dist.get_rank() == 0:
        print("EVAL " + json.dumps(values), flush=True)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
