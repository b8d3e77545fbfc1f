"""Harness check: train a tiny LLaMA for a few steps with colossalai's TorchDDPPlugin on CPU ranks.

Usage (under torchrun / colossalai run): ddp_smoke_train.py MODEL_DIR STEPS
Rank 0 prints one line per step: ``SMOKE_LOSS <step> <loss averaged over ranks>``.
"""
import faulthandler
import os
import sys

# If a rank ever hangs (e.g. in shutdown), print every thread's stack instead of hanging the test.
faulthandler.dump_traceback_later(240, exit=True)

import colossalai
import torch
import torch.distributed as dist
from colossalai.booster import Booster
from colossalai.booster.plugin import TorchDDPPlugin
from transformers import AutoModelForCausalLM, AutoTokenizer


def main() -> None:
    model_dir, steps = sys.argv[1], int(sys.argv[2])
    colossalai.launch_from_torch(seed=1234, backend="gloo")
    rank = dist.get_rank()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
    texts = ["The river runs past the old mill, where the water turns a wheel.",
             "A checkpoint stores the weights of the model and the state of the optimizer."]
    batch = tokenizer([texts[rank % len(texts)]], return_tensors="pt")
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    booster = Booster(plugin=TorchDDPPlugin())
    model, optimizer, *_ = booster.boost(model, optimizer)
    for step in range(steps):
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["input_ids"])
        booster.backward(out.loss, optimizer)
        optimizer.step()
        optimizer.zero_grad()
        loss = out.loss.detach().clone()
        dist.all_reduce(loss)
        if rank == 0:
            print(f"SMOKE_LOSS {step} {loss.item() / dist.get_world_size():.6f}", flush=True)
    # Like train.py (training/lifecycle/process.py: leave_process): gloo's process-group teardown can hang once a peer
    # has exited, so wait for every rank and leave without it.
    dist.barrier()
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
