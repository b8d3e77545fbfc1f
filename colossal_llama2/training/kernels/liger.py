"""liger-kernel (https://github.com/linkedin/Liger-Kernel) inside train.py: its Triton kernels for LLaMA.

* ``--fused_ops liger``: RMSNorm, rotary embedding and SwiGLU as liger's kernels (one kernel each way per
  call, activations saved in bf16). Patched on the model's own module instances after boosting, so the
  parameters, their names and the checkpoints are transformers' own; the rotary function is replaced in
  transformers' llama module (liger offers no per-instance form of it).
* ``--fused_loss linear``: liger's fused linear cross-entropy. The lm_head matmul and the loss run chunk by
  chunk of tokens, and each chunk's logits become their own gradient at once, so the ``[tokens, vocab]``
  logits never exist in full (at 7b, vocab 69,104: 566 MB per 4,096 tokens in bf16, and their gradient).
  The lm_head weight's gradient is accumulated over the chunks in fp32 (liger's default would add the
  chunks up in bf16).

Only for plugins whose model holds transformers' modules with half-precision parameters as plain tensors
(zero2, zero2_cpu): Gemini keeps weights in chunks that exist only inside a module's own forward, and 3d's
shardformer replaces the modules. liger-kernel needs CUDA and Triton: `pip install -e .[gpu]`.
"""
from __future__ import annotations

import importlib.util
import types

import torch

LIGER_PLUGINS = ("zero2", "zero2_cpu")


def liger_available(cuda: bool) -> tuple[bool, str]:
    """(can liger-kernel run here, why not)."""
    if not cuda:
        return False, "liger-kernel's Triton kernels need a CUDA GPU"
    if importlib.util.find_spec("liger_kernel") is None:
        return False, "liger-kernel is not installed (pip install -e .[gpu])"
    return True, ""


def apply_liger_kernels(model: torch.nn.Module) -> int:
    """RMSNorm, rotary and SwiGLU of a LLaMA/Qwen2/Mistral model as liger's kernels, through the family's own
    liger entry point (``model/families.py``); returns the modules patched."""
    import liger_kernel.transformers as liger

    from ...model.families import family_of

    family = family_of(model.config.model_type)
    getattr(liger, family.liger_entry)(rope=True, rms_norm=True, swiglu=True, cross_entropy=False,
                                       fused_linear_cross_entropy=False, model=model)
    return 1 + 3 * len(model.model.layers)  # the final norm; two norms and an MLP per layer


def liger_linear_loss_sum(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                          ignore_index: int) -> torch.Tensor:
    """Sum of token cross-entropies of ``hidden @ weight.T`` against ``targets`` without the logits in full."""
    from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy

    return liger_fused_linear_cross_entropy(hidden, weight, targets, ignore_index=ignore_index, reduction="sum",
                                            accum_dtype=torch.float32)


def _forward_with_linear_loss(self, *args, loss_targets: torch.Tensor | None = None, **kwargs):
    """LlamaForCausalLM.forward, plus: with ``loss_targets`` ([b, L], aligned with every position) it returns
    only ``loss``, the summed token loss computed from the last hidden states by ``self._linear_loss``."""
    if loss_targets is None:
        return type(self).forward(self, *args, **kwargs)
    from transformers.modeling_outputs import CausalLMOutputWithPast

    hidden = self.model(*args, **kwargs).last_hidden_state
    flat = hidden.reshape(-1, hidden.shape[-1])
    return CausalLMOutputWithPast(loss=self._linear_loss(flat, self.lm_head.weight, loss_targets.reshape(-1)))


def enable_linear_loss(model: torch.nn.Module, loss_sum=liger_linear_loss_sum, ignore_index: int = -100) -> None:
    """Let ``model(..., loss_targets=t)`` return the summed token loss from hidden states and lm_head's weight.

    Patched on the instance, inside the plugin's wrapper: the wrapper's input casting and hooks still apply.
    ``loss_sum(hidden [n, H], weight [V, H], targets [n], ignore_index)``: liger's kernel on GPU; tests pass a
    reference to check the plumbing on CPU.
    """
    model._linear_loss = lambda h, w, t: loss_sum(h, w, t, ignore_index)
    model.forward = types.MethodType(_forward_with_linear_loss, model)
