"""What differs between model families for the trainer's fast paths, in one place, looked up by ``model_type``.

Every family here shares LLaMA's decoder (RMSNorm, rotary embedding, SwiGLU MLP, GQA attention through
transformers' attention interface), so the fused RMSNorm, the fused losses, per-layer compile, fp8 and the
packed-document attention apply to all of them; what differs is the RMSNorm class to patch and
liger-kernel's entry point (each patches its own modeling module's rotary function). Qwen2's qkv bias and
tied embeddings need nothing here: the linears and the lm_head are ordinary modules. Qwen3's per-head q/k norms
are RMSNorms of the same class: the fused RMSNorm covers them; liger's entry point patches the other norms.

A model type not listed (Gemma-3, for one: its norm scales by 1 + weight, and it adds norms around the MLP)
trains with the reference modules; ``plan_model_patches`` says so in its log line.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    name: str
    modeling_module: str  # transformers' modeling module of the family
    rms_norm_class: str   # its RMSNorm (same math as LLaMA's: normalise in fp32, cast, scale)
    liger_entry: str      # liger_kernel.transformers' apply function (rope, rms_norm, swiglu, model=...)

    def rms_norm_type(self) -> type:
        return getattr(importlib.import_module(self.modeling_module), self.rms_norm_class)


FAMILIES = {
    "llama": Family("LLaMA", "transformers.models.llama.modeling_llama", "LlamaRMSNorm", "apply_liger_kernel_to_llama"),
    "qwen2": Family("Qwen2", "transformers.models.qwen2.modeling_qwen2", "Qwen2RMSNorm", "apply_liger_kernel_to_qwen2"),
    "qwen3": Family("Qwen3", "transformers.models.qwen3.modeling_qwen3", "Qwen3RMSNorm", "apply_liger_kernel_to_qwen3"),
    "mistral": Family("Mistral", "transformers.models.mistral.modeling_mistral", "MistralRMSNorm",
                      "apply_liger_kernel_to_mistral"),
}


def family_of(model_type: str | None) -> Family | None:
    return FAMILIES.get(model_type or "")
