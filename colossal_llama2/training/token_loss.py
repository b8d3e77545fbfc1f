"""One micro-batch's forward: (sum of token losses, number of label tokens), for training and evaluation.

The loop divides the sum by the step's label tokens over all ranks, so micro-batch size and accumulation
steps trade freely (see loop.py). Four ways to the loss, by plugin and flags: liger's fused linear
cross-entropy from the last hidden states (no logits at all; zero2), the fused cross-entropy over the
logits (no fp32 copy of them), the reference F.cross_entropy, and for 3d the model's own loss (shardformer
may keep the logits sharded over the vocabulary).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..dataset.schema import IGNORE_INDEX
from .attention import model_inputs
from .kernels.fused_ops import fused_cross_entropy, shifted_labels
from .model_setup import ModelPatches
from .neftune import NEFTune


class TokenLoss:
    def __init__(self, model: torch.nn.Module, patches: ModelPatches, *, device: torch.device,
                 mask_dtype: torch.dtype, model_computes_loss: bool, neftune: NEFTune | None):
        self.model = model
        self.patches = patches
        self.device = device
        self.mask_dtype = mask_dtype
        self.model_computes_loss = model_computes_loss
        self.neftune = neftune

    def __call__(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        if self.neftune is not None:
            self.neftune.set_lengths(batch["attention_mask"])
        inputs = model_inputs(batch, attn_implementation=self.patches.attn_implementation,
                              isolate_documents=self.patches.isolate_documents, mask_dtype=self.mask_dtype)
        labels = batch["labels"]
        n_tokens = (labels[:, 1:] != IGNORE_INDEX).sum()
        if self.patches.fusion.linear_loss:  # the model returns the summed loss (liger_ops.enable_linear_loss)
            return self.model(**inputs, loss_targets=shifted_labels(labels, IGNORE_INDEX)).loss, n_tokens
        if self.model_computes_loss:
            out = self.model(**inputs, labels=labels)
            # out.loss is the mean over this micro-batch's label tokens (NaN when it has none)
            return (out.loss * n_tokens if n_tokens > 0 else out.logits.sum() * 0.0), n_tokens
        if self.patches.bf16_autocast:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                logits = self.model(**inputs).logits
        else:
            logits = self.model(**inputs).logits
        return self._loss_sum(logits, labels), n_tokens

    def _loss_sum(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        fusion = self.patches.fusion
        if not fusion.loss:
            return F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                                   labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum")
        if type(logits) is not torch.Tensor:  # Gemini's ColoTensor: the compiled kernel takes plain tensors
            logits = logits.as_subclass(torch.Tensor)
        return fused_cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                   shifted_labels(labels, IGNORE_INDEX).reshape(-1), ignore_index=IGNORE_INDEX,
                                   compiled=fusion.compile_loss)
