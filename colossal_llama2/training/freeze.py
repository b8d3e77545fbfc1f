"""--freeze_non_embeds_params: train only the input embeddings and the LM head (after vocabulary growth)."""
from __future__ import annotations

import torch


def freeze_non_embedding_params(model: torch.nn.Module) -> tuple[int, int]:
    """Set requires_grad=False everywhere except embed_tokens/lm_head; return (trainable, frozen) counts."""
    keep = {id(p) for p in model.get_input_embeddings().parameters()}
    out = model.get_output_embeddings()
    if out is not None:
        keep |= {id(p) for p in out.parameters()}
    trainable = frozen = 0
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)
        if id(p) in keep:
            trainable += p.numel()
        else:
            frozen += p.numel()
    return trainable, frozen
