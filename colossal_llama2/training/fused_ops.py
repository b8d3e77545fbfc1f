"""Fused versions of the memory-bound parts of a LLaMA training step.

The 1b profile (docs/benchmarks.md) spends only a quarter of the step in matmuls; a third goes to
elementwise work that reads and writes whole activations several times: RMSNorm's fp32 round trip,
rotary's ``rotate_half`` (a concatenated copy) and products, SwiGLU's ``silu(gate) * up``, and a loss that
upcasts the full ``[tokens, 69k]`` logits to fp32. Each of them here is written once, in plain torch, with
exactly Hugging Face's math, and — when fused — compiled by torch.compile (Inductor) into one kernel
forward and one backward. Only these small functions are compiled, not the model: the plugins' wrappers,
hooks and the attention kernel stay outside compiled code, and their shapes do not change from step to step,
so nothing recompiles (``--compile``, which compiles whole decoder layers, measured slower).

The loss, ``fused_cross_entropy``, never materialises fp32 logits: per block of rows it computes the summed
token loss and the gradient (softmax - one-hot) in one pass over the half-precision logits, keeps that
gradient (bf16 logits: in bf16, the range of fp32; otherwise fp32) and frees the logits. Backward is then a
single scale by the incoming gradient.
"""
from __future__ import annotations

import dataclasses
import functools
import types

import torch
import torch.nn.functional as F

from ..utils.logging import get_logger

logger = get_logger(__name__)

# Rows of logits per loss block: bounds the eager fp32 temporaries (CPU) and the compiled kernel's grid;
# 2**29 elements = 1 GiB of bf16 logits, so a 4096-token sample over a 69k vocabulary is one block.
LOSS_BLOCK_ELEMENTS = 2**29


# ----------------------------------------------------------------------------------------------------------
# The math, identical to transformers' LLaMA (modeling_llama.py, 4.51).

def rms_norm(hidden_states: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """LlamaRMSNorm: normalise in fp32, cast back to the input dtype, then scale."""
    input_dtype = hidden_states.dtype
    h = hidden_states.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(input_dtype)


def rms_normalize(hidden_states: torch.Tensor, eps: float) -> torch.Tensor:
    """rms_norm without the weight, for parameters the compiler cannot take as inputs (see _norm_forward)."""
    input_dtype = hidden_states.dtype
    h = hidden_states.to(torch.float32)
    return (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)).to(input_dtype)


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """LlamaMLP's activation: silu(gate_proj(x)) * up_proj(x)."""
    return F.silu(gate) * up


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rotary(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, position_ids=None,
           unsqueeze_dim: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """apply_rotary_pos_emb (same signature, so it can stand in for it)."""
    cos = cos.unsqueeze(unsqueeze_dim)
    sin = sin.unsqueeze(unsqueeze_dim)
    return (q * cos) + (_rotate_half(q) * sin), (k * cos) + (_rotate_half(k) * sin)


def cross_entropy_block(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int, with_grad: bool,
                        grad_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(sum of token losses in fp32, d(sum)/d(logits) in grad_dtype or None) for logits [n, V], labels [n]."""
    x = logits.to(torch.float32)
    lse = torch.logsumexp(x, dim=-1)
    valid = labels != ignore_index
    target = torch.where(valid, labels, 0)
    picked = x.gather(1, target[:, None]).squeeze(1)
    loss = torch.where(valid, lse - picked, 0.0).sum()
    if not with_grad:
        return loss, None
    # softmax - one_hot, written as one pointwise expression so that it fuses into a single kernel
    columns = torch.arange(x.shape[1], device=x.device)[None, :]
    grad = torch.exp(x - lse[:, None]) - (columns == target[:, None]).to(torch.float32)
    grad = torch.where(valid[:, None], grad, 0.0)
    return loss, grad.to(grad_dtype)


# ----------------------------------------------------------------------------------------------------------
# Compilation: lazily, once per process; the same compiled function serves every layer.

@functools.lru_cache(maxsize=None)
def _compiled(name: str):
    fn = {"rms_norm": rms_norm, "rms_normalize": rms_normalize, "swiglu": swiglu, "rotary": rotary, "cross_entropy_block": cross_entropy_block}[name]
    return torch.compile(fn, fullgraph=True, dynamic=None)


def kernel(name: str, compiled: bool):
    return _compiled(name) if compiled else globals()[name]


def compile_available(cuda: bool) -> tuple[bool, str]:
    """(can torch.compile generate fused kernels here, why not)."""
    if not cuda:
        return True, ""  # Inductor's C++ backend; slow to compile, so CPU runs only fuse when asked to
    try:
        from torch.utils._triton import has_triton
    except ImportError:
        return False, "this torch has no triton support"
    return (True, "") if has_triton() else (False, "triton is not installed")


# Plugins whose models are transformers' own LLaMA modules (3d's shardformer replaces norms, MLPs and attention).
FUSABLE_PLUGINS = ("zero2", "zero2_cpu", "ddp", "gemini", "gemini_auto")


@dataclasses.dataclass(frozen=True)
class Fusion:
    elementwise: bool  # compiled RMSNorm / rotary / SwiGLU
    loss: bool  # fused_cross_entropy instead of F.cross_entropy over fp32 logits
    compile_loss: bool  # the loss kernel compiled (else the same math eagerly, block by block)

    def describe(self) -> str:
        loss = ("fused, compiled" if self.compile_loss else "fused, eager") if self.loss else "reference"
        return f"elementwise kernels {'fused' if self.elementwise else 'eager'}, loss {loss}"


def resolve_fusion(fused_ops: str, fused_loss: str, plugin: str, cuda: bool) -> Fusion:
    """Turn --fused_ops / --fused_loss (auto, on, off) into what runs; UserInputError for what cannot."""
    from ..utils.errors import UserInputError

    if fused_ops == "on" and plugin not in FUSABLE_PLUGINS:
        raise UserInputError(f"not supported with --plugin {plugin} (shardformer replaces the norm, MLP and "
                             f"attention modules)", where="--fused_ops")
    if fused_loss == "on" and plugin not in FUSABLE_PLUGINS:
        raise UserInputError(f"not supported with --plugin {plugin} (shardformer's model computes the loss over "
                             f"possibly vocabulary-sharded logits)", where="--fused_loss")
    can_compile, why = compile_available(cuda)
    if fused_ops == "on" and not can_compile:
        raise UserInputError(f"torch.compile cannot generate kernels here: {why}", where="--fused_ops")
    auto_compile = cuda and can_compile and plugin in FUSABLE_PLUGINS
    if fused_ops == "auto" and cuda and not can_compile:
        logger.warning("fused kernels off: %s", why)
    elementwise = fused_ops == "on" or (fused_ops == "auto" and auto_compile)
    loss = fused_loss == "on" or (fused_loss == "auto" and plugin in FUSABLE_PLUGINS)
    return Fusion(elementwise=elementwise, loss=loss, compile_loss=loss and (elementwise or auto_compile))


# ----------------------------------------------------------------------------------------------------------
# The loss.

class _FusedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, labels, ignore_index, block_rows, compiled):
        with_grad = ctx.needs_input_grad[0]
        # bf16 has fp32's range, so its gradient keeps tiny probabilities; fp16 would flush them to zero
        # before the loss scale is applied, so fp16 (and fp32) logits keep an fp32 gradient.
        grad_dtype = torch.bfloat16 if logits.dtype == torch.bfloat16 else torch.float32
        block = kernel("cross_entropy_block", compiled)
        n = logits.shape[0]
        losses, grads = [], []
        for start in range(0, n, block_rows):
            loss, grad = block(logits[start:start + block_rows], labels[start:start + block_rows], ignore_index,
                               with_grad, grad_dtype)
            losses.append(loss)
            grads.append(grad)
        total = torch.stack(losses).sum() if len(losses) > 1 else losses[0]
        if with_grad:
            ctx.save_for_backward(grads[0] if len(grads) == 1 else torch.cat(grads))
            ctx.logits_dtype = logits.dtype
        return total

    @staticmethod
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        if grad.dtype == ctx.logits_dtype:
            grad = grad.mul_(grad_output.to(grad.dtype))  # the saved gradient is used once: scale it in place
        else:
            grad = (grad * grad_output).to(ctx.logits_dtype)
        return grad, None, None, None, None


def fused_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, *, ignore_index: int = -100,
                        compiled: bool = False, block_rows: int | None = None) -> torch.Tensor:
    """Sum of token cross-entropies of logits [n, V] against labels [n] (ignore_index skipped), in fp32.

    Equals ``F.cross_entropy(logits.float(), labels, ignore_index=ignore_index, reduction="sum")`` and its
    gradient, without an fp32 copy of the logits.
    """
    if logits.dim() != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"expected logits [n, V] and labels [n], got {tuple(logits.shape)} and {tuple(labels.shape)}")
    if block_rows is None:
        block_rows = max(1, LOSS_BLOCK_ELEMENTS // logits.shape[1])
    return _FusedCrossEntropy.apply(logits, labels, ignore_index, block_rows, compiled)


def shifted_labels(labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Next-token targets aligned with every position: labels[:, 1:] and ignore_index at the last position.

    Lets the loss use the logits as they are ([b*L, V], a view) instead of copying logits[:, :-1].
    """
    out = torch.full_like(labels, ignore_index)
    out[:, :-1] = labels[:, 1:]
    return out


# ----------------------------------------------------------------------------------------------------------
# Putting the fused elementwise kernels into a Hugging Face LLaMA model.

def _norm_forward(self, hidden_states):
    if type(self.weight) is not torch.nn.Parameter:
        # Gemini's parameters are a tensor subclass whose __torch_function__ fetches their chunk; the compiled
        # kernel must not trace through it, so the weight is applied outside (one more pass, still fused norm).
        return self.weight * kernel("rms_normalize", True)(hidden_states, self.variance_epsilon)
    return kernel("rms_norm", True)(hidden_states, self.weight, self.variance_epsilon)


def _mlp_forward(self, x):
    return self.down_proj(kernel("swiglu", True)(self.gate_proj(x), self.up_proj(x)))


def fuse_llama_elementwise(model: torch.nn.Module) -> dict[str, int]:
    """Route RMSNorm, SwiGLU and rotary of a transformers LLaMA model through the compiled kernels.

    Only forwards are swapped (instance attributes), so parameters, state dicts and saved checkpoints are
    untouched. Rotary is a module-level function in transformers, so it is swapped for the whole process.
    Returns how many modules of each kind now run fused.
    """
    from transformers.models.llama import modeling_llama

    counts = {"rms_norm": 0, "swiglu": 0, "rotary": 0}
    for module in model.modules():
        if isinstance(module, modeling_llama.LlamaRMSNorm):
            module.forward = types.MethodType(_norm_forward, module)
            counts["rms_norm"] += 1
        elif isinstance(module, modeling_llama.LlamaMLP) and getattr(module.config, "hidden_act", None) == "silu":
            module.forward = types.MethodType(_mlp_forward, module)
            counts["swiglu"] += 1
        elif isinstance(module, modeling_llama.LlamaAttention):
            counts["rotary"] += 1
    if counts["rotary"]:
        modeling_llama.apply_rotary_pos_emb = kernel("rotary", True)
    return counts
