"""NEFTune (Jain et al., 2023): uniform noise on the input embeddings while training.

noise ~ U(-1, 1) * alpha / sqrt(L * d), with L the real (unpadded) length of each sample and d the
hidden size. Implemented as a forward hook on the embedding module, active only in ``model.training``,
so evaluation and saved weights are untouched. The noise uses torch's global RNG, which checkpoints
save and restore, so a resumed run draws the same noise.
"""
from __future__ import annotations

import torch


class NEFTune:
    def __init__(self, embedding: torch.nn.Module, alpha: float = 5.0):
        self.alpha = alpha
        self.lengths: torch.Tensor | None = None  # [batch] real lengths of the batch about to be run
        self.handle = embedding.register_forward_hook(self._hook)

    def set_lengths(self, attention_mask: torch.Tensor) -> None:
        self.lengths = attention_mask.sum(dim=1)

    def _hook(self, module, inputs, output):
        if not module.training or self.alpha <= 0:
            return output
        batch, length, dim = output.shape
        lengths = self.lengths if self.lengths is not None else torch.full((batch,), length)
        scale = self.alpha / torch.sqrt(lengths.to(output.device, torch.float32).clamp(min=1) * dim)
        noise = torch.empty(output.shape, device=output.device, dtype=torch.float32).uniform_(-1, 1)
        return output + (noise * scale.view(batch, 1, 1)).to(output.dtype)

    def remove(self) -> None:
        self.handle.remove()
