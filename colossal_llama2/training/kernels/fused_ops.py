"""Fused versions of the memory-bound parts of a LLaMA training step.

Measured on one H100 (benchmarks/kernel_benchmark.py), forward + backward at the 1b
shapes: transformers' RMSNorm (an fp32 round trip in eight kernels) takes 0.63 ms per call, torch's native
``F.rms_norm`` 0.11 ms; the loss over fp32 copies of the ``[4096, 69104]`` logits 4.9 ms, the fused loss below
1.6 ms. The training step is also host-bound (the GPU idles while Python issues kernels), so what counts is
fewer kernels *and* less Python per call. That rules out compiling the small ops one by one: torch.compile'd
RMSNorm, SwiGLU and rotary each cost ~0.4 ms of host time per call, more than the GPU time they save, and
made the step slower (0.84x) - those stay eager.

* ``--fused_ops``: every LlamaRMSNorm runs as ``F.rms_norm`` (one kernel each way). It rounds to bf16 once,
  where transformers rounds twice (normalised value, then the product with the weight): outputs differ by
  at most one bf16 ulp, and the loss curve matches.
* ``--fused_loss``: ``fused_cross_entropy`` never materialises fp32 logits. Per block of rows it computes the
  summed token loss and the gradient (softmax - one-hot) in one pass over the half-precision logits (one
  compiled kernel on CUDA: a single call per step, so its host cost does not matter), keeps that gradient
  (bf16 logits: in bf16, which has fp32's range; otherwise fp32) and frees the logits; backward is a single
  scale by the incoming gradient. Peak memory -1.7 GiB on the 1b shape.
"""
from __future__ import annotations

import dataclasses
import functools
import types

import torch
import torch.nn.functional as F

from ...utils.logging import get_logger
from ...utils.stack import stack_name

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
# Compilation: lazily, once per process.

@functools.lru_cache(maxsize=None)
def compiled_cross_entropy_block():
    """cross_entropy_block through torch.compile (Inductor fuses it into two kernels); built once per process."""
    return torch.compile(cross_entropy_block, fullgraph=True, dynamic=None)


def compile_available(cuda: bool) -> tuple[bool, str]:
    """(can torch.compile generate fused kernels here, why not)."""
    if not cuda:
        return True, ""  # Inductor's C++ backend (tests); CPU training runs the loss eagerly
    try:
        from torch.utils._triton import has_triton
    except ImportError:
        return False, "this torch has no triton support"
    return (True, "") if has_triton() else (False, "triton is not installed")


# Plugins whose models are transformers' own LLaMA modules (3d's shardformer replaces norms, MLPs and attention).
FUSABLE_PLUGINS = ("zero2", "zero2_cpu", "ddp", "gemini", "gemini_auto")


@dataclasses.dataclass(frozen=True)
class Fusion:
    norm: bool  # LlamaRMSNorm as F.rms_norm (or liger's, with ``liger``)
    loss: bool  # fused_cross_entropy (or liger's fused linear loss, with ``linear_loss``) instead of F.cross_entropy
    compile_loss: bool  # the loss kernel compiled (else the same math eagerly, block by block)
    liger: bool = False  # liger-kernel's RMSNorm, rotary and SwiGLU (liger_ops.py)
    linear_loss: bool = False  # liger-kernel's fused linear cross-entropy: the logits never exist in full

    def describe(self) -> str:
        if self.linear_loss:
            loss = "liger fused linear cross-entropy"
        else:
            loss = ("fused, compiled" if self.compile_loss else "fused, eager") if self.loss else "reference"
        norm = "liger RMSNorm/rotary/SwiGLU" if self.liger else f"RMSNorm {'fused' if self.norm else 'reference'}"
        return f"{norm}, loss {loss}"


def _refuse(flag: str, value: str, plugin: str, allowed: tuple[str, ...], why: str) -> None:
    from ...utils.errors import UserInputError

    if plugin not in allowed:
        raise UserInputError(f"{value} is not supported with --plugin {plugin} ({why}); it works with "
                             f"{', '.join(allowed)}", where=flag)


def resolve_fusion(fused_ops: str, fused_loss: str, plugin: str, cuda: bool, model_type: str = "llama") -> Fusion:
    """Turn --fused_ops (auto, on, liger, off) / --fused_loss (auto, on, linear, off) into what runs.

    The RMSNorm/rotary/SwiGLU kernels need the model's family in ``model/families.py`` (LLaMA, Qwen2,
    Mistral); another model type keeps its reference modules (auto, with a warning) or is refused (on, liger).

    UserInputError for what cannot run here. auto: liger's kernels where they run (zero2/zero2_cpu on CUDA
    with liger-kernel installed: 1.05x at 7b's layer shapes), else F.rms_norm on CUDA; the compiled fused
    loss (liger's fused linear loss measured 0.85x there: it is for micro-batches that would not fit).
    """
    from ...utils.errors import UserInputError
    from .liger import LIGER_PLUGINS, liger_available

    shardformer = "shardformer replaces the modules and computes the loss itself"
    if fused_ops in ("on", "liger"):
        _refuse("--fused_ops", fused_ops, plugin, FUSABLE_PLUGINS, shardformer)
    if fused_loss in ("on", "linear"):
        _refuse("--fused_loss", fused_loss, plugin, FUSABLE_PLUGINS, shardformer)
    chunked = "Gemini's weights exist only inside their own module's forward"
    if fused_ops == "liger":
        _refuse("--fused_ops", fused_ops, plugin, LIGER_PLUGINS, chunked)
    if fused_loss == "linear":
        _refuse("--fused_loss", fused_loss, plugin, LIGER_PLUGINS, chunked)
    can_liger, why_not = liger_available(cuda)
    for flag, value in (("--fused_ops", fused_ops), ("--fused_loss", fused_loss)):
        if value in ("liger", "linear") and not can_liger:
            raise UserInputError(f"{value} needs liger-kernel: {why_not}", where=flag)
    if fused_ops == "on" and not native_rms_norm_available():
        raise UserInputError("this torch has no torch.nn.functional.rms_norm", where="--fused_ops")
    from ...model.families import FAMILIES, family_of

    if family_of(model_type) is None and fused_ops != "off":
        why = (f"model type {model_type!r} is not one of the families with fused kernels "
               f"({', '.join(sorted(FAMILIES))})")
        if fused_ops != "auto":
            raise UserInputError(f"{fused_ops}: {why}", where="--fused_ops")
        logger.warning("RMSNorm/rotary/SwiGLU kernels off: %s; its own modules run", why)
        fused_ops = "off"
    family = family_of(model_type)
    if family is not None and fused_ops != "off" and not family_norm_matches(family):
        why = f"{family.name}'s {family.rms_norm_class} in {stack_name()} no longer computes LLaMA's RMSNorm"
        if fused_ops != "auto":
            raise UserInputError(f"{fused_ops}: {why}", where="--fused_ops")
        logger.warning("RMSNorm/rotary/SwiGLU kernels off: %s; its own modules run", why)
        fused_ops = "off"
    liger = fused_ops == "liger" or (fused_ops == "auto" and can_liger and plugin in LIGER_PLUGINS)
    norm = liger or fused_ops == "on" or (fused_ops == "auto" and cuda and plugin in FUSABLE_PLUGINS
                                          and native_rms_norm_available())
    linear_loss = fused_loss == "linear"
    loss = linear_loss or fused_loss == "on" or (fused_loss == "auto" and plugin in FUSABLE_PLUGINS)
    can_compile, why = compile_available(cuda)
    if loss and not linear_loss and cuda and not can_compile:
        logger.warning("the fused loss runs eagerly: %s", why)
    return Fusion(norm=norm, loss=loss, compile_loss=loss and not linear_loss and cuda and can_compile,
                  liger=liger, linear_loss=linear_loss)


@functools.lru_cache(maxsize=None)
def family_norm_matches(family) -> bool:
    """Whether the family's RMSNorm class, as the installed transformers defines it, computes ``rms_norm`` above
    (fp32 and bf16 input, on CPU): the fused RMSNorm replaces its forward, so a changed class must not be patched."""
    norm_type = family.rms_norm_type()
    generator = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16):
        norm = norm_type(16, eps=1e-6).to(dtype)
        x = torch.randn(3, 16, generator=generator).to(dtype)
        with torch.no_grad():
            norm.weight.copy_(torch.randn(16, generator=generator))
            if not torch.equal(norm(x), rms_norm(x, norm.weight, 1e-6)):
                return False
    return True


# ----------------------------------------------------------------------------------------------------------
# The loss.

class _FusedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, labels, ignore_index, block_rows, compiled):
        with_grad = ctx.needs_input_grad[0]
        # bf16 has fp32's range, so its gradient keeps tiny probabilities; fp16 would flush them to zero
        # before the loss scale is applied, so fp16 (and fp32) logits keep an fp32 gradient.
        grad_dtype = torch.bfloat16 if logits.dtype == torch.bfloat16 else torch.float32
        block = compiled_cross_entropy_block() if compiled else cross_entropy_block
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
# Putting the fused norm into a Hugging Face LLaMA model.

def native_rms_norm_available() -> bool:
    return hasattr(F, "rms_norm")


def _norm_forward(self, hidden_states):
    weight = self.weight
    if weight.dtype != hidden_states.dtype:
        if weight.dtype == torch.float32 and hidden_states.dtype in (torch.bfloat16, torch.float16):
            # autocast (ddp): cast the weight, not the activations, so they stay in half precision
            weight = weight.to(hidden_states.dtype)
        else:  # e.g. half-precision weights under fp32 activations: transformers' math
            return rms_norm(hidden_states, weight, self.variance_epsilon)
    return F.rms_norm(hidden_states, (hidden_states.shape[-1],), weight, self.variance_epsilon)


def fuse_rms_norms(model: torch.nn.Module) -> int:
    """Run every RMSNorm of a transformers model of a known family (``model/families.py``: LLaMA, Qwen2,
    Mistral) as F.rms_norm; returns how many.

    Only forwards are swapped (instance attributes): parameters, state dicts and checkpoints are untouched.
    """
    from ...model.families import family_of

    family = family_of(getattr(model.config, "model_type", None))
    if family is None:
        return 0
    norm_type = family.rms_norm_type()
    count = 0
    for module in model.modules():
        if isinstance(module, norm_type):
            module.forward = types.MethodType(_norm_forward, module)
            count += 1
    return count
