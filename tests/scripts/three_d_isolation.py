"""Packed documents under the 3d plugin (shardformer, tensor parallel): a document's loss inside a packed
sample equals its loss as a sample of its own. Run with torchrun on 1 or 2 GPUs; prints one JSON line.

    torchrun --nproc_per_node 2 tests/scripts/three_d_isolation.py MODEL_DIR TP
"""
from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist


def main(model_dir: str, tp: int) -> None:
    import colossalai
    from colossalai.booster import Booster
    from transformers import AutoModelForCausalLM

    from colossal_llama2.dataset.loader import PaddingCollator
    from colossal_llama2.dataset.schema import IGNORE_INDEX
    from colossal_llama2.training.attention import model_inputs
    from colossal_llama2.training.plugins.factory import make_plugin

    colossalai.launch_from_torch(seed=0)
    plugin = make_plugin("3d", precision="fp16", max_norm=0.0, tp=tp, zero=0, accumulation_steps=1)
    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="sdpa", torch_dtype=torch.float32)
    model, *_ = Booster(plugin=plugin).boost(model)
    model.eval()
    g = torch.Generator().manual_seed(0)
    doc_a = [1] + torch.randint(3, 500, (13,), generator=g).tolist()
    doc_b = [1] + torch.randint(3, 500, (17,), generator=g).tolist()
    collate = PaddingCollator(pad_token_id=2, max_length=48, padding_mode="max_length")

    def loss_of(ids, lens, labels, isolate=True):
        batch = collate([{"input_ids": ids, "labels": labels, "seq_lengths": lens}])
        batch = {k: v.cuda() for k, v in batch.items()}
        inputs = model_inputs(batch, attn_implementation="sdpa", isolate_documents=isolate, mask_dtype=torch.float16)
        with torch.no_grad():
            return model(**inputs, labels=batch["labels"]).loss.item()

    # doc b's first token is not predicted from doc a: its label is ignored, as the shift ignores it alone
    ignore_a = [IGNORE_INDEX] * (len(doc_a) + 1)
    result = {
        "alone": loss_of(doc_b, [len(doc_b)], doc_b),
        "packed": loss_of(doc_a + doc_b, [len(doc_a), len(doc_b)], ignore_a + doc_b[1:]),
        "packed_not_isolated": loss_of(doc_a + doc_b, [len(doc_a), len(doc_b)], ignore_a + doc_b[1:],
                                       isolate=False),
    }
    if dist.get_rank() == 0:
        print("ISOLATION " + json.dumps(result), flush=True)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
