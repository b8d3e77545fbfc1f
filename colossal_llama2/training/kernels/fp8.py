"""fp8 matmuls for the decoder layers' linear projections (``--fp8 tensorwise|rowwise``).

torchao's float8 training (``convert_to_float8_training``): every ``nn.Linear`` inside the decoder layers
becomes a ``Float8Linear`` that casts its input, weight and output gradient to float8 with dynamic scales
(one per tensor, or one per row) and runs the three matmuls of forward and backward as ``torch._scaled_mm``.
The parameters stay the same bf16 ``Parameter`` objects, so the plugin's optimizer, gradient hooks and
checkpoints are untouched. lm_head and the embedding stay bf16 (lm_head's output is the loss's input). Applied
after boosting, on the model's own modules; with ``--compile`` the casts fuse into each layer's compiled graph
(without it each cast is several eager kernels, which cost more than the fp8 matmul saves).

Off by default. ``tensorwise`` met the bar fp8 ships at (measured with benchmarks/train_benchmark.py on one H200
at 16 of 7b's layers: 1.19-1.20x zero2's bf16 defaults at micro-batch 1, 1.29x at 2, the mean loss of the last 50
of 200 steps within 1% of bf16's); ``rowwise`` did not (0.97x) and stays behind ``--fp8_experimental``. colossalai's own ``use_fp8`` is not
offered: with torch 2.11 its compiled ``_linear_fp8`` fails to trace (``_LinearFp8.apply``, a dynamo graph
break inside a fullgraph region), so it does not run on the stack this project targets.
"""
from __future__ import annotations

import importlib.util

import torch

from ...utils.errors import UserInputError

FP8_TOKEN_MULTIPLE = 16  # fp8 matmuls take dimensions in multiples of 16, the token count included
FP8_CHOICES = ("off", "tensorwise", "rowwise")
FP8_PLUGINS = ("zero2", "zero2_cpu")  # bf16 weights in transformers' own nn.Linear modules (tested with zero2)
FP8_SHIPPED = ("tensorwise",)  # met the bar: >= 1.2x the best bf16 path at some shape, loss within 1% over 200 steps
# Why the others need --fp8_experimental; measured with benchmarks/train_benchmark.py.
FP8_BELOW_BAR = ("fp8 ships when it is 1.2x the best bf16 path with the loss within 1% over 200 steps: measured on one "
                 "H200 at 16 of 7b's layers (zero2, --compile --fused_ops on), rowwise ran at 0.97x bf16 "
                 "(tensorwise, which met the bar, needs no flag)")


def check_fp8(choice: str, *, plugin: str, capability: tuple[int, int] | None, experimental: bool,
              max_length: int) -> None:
    """Raise UserInputError, naming --fp8, for an fp8 setting that cannot or should not run here.

    ``capability``: the GPU's CUDA compute capability, None without one."""
    if choice == "off":
        return
    if plugin not in FP8_PLUGINS:
        raise UserInputError(f"--fp8 works with --plugin {', '.join(FP8_PLUGINS)} (bf16 weights in transformers' "
                             f"own linear modules, tested with zero2), not {plugin}", where="--fp8")
    if max_length % FP8_TOKEN_MULTIPLE:
        # the weight gradient's matmul runs over the tokens: fp8 matmuls need that dimension in multiples of 16
        # (batches are padded to such widths, which must not pass --max_length)
        raise UserInputError(f"--fp8 needs a --max_length divisible by {FP8_TOKEN_MULTIPLE} (got {max_length})",
                             where="--fp8")
    if capability is None or capability < (8, 9):
        raise UserInputError("fp8 matmuls need a CUDA GPU of compute capability 8.9 or newer (Ada, Hopper)",
                             where="--fp8")
    if choice not in FP8_SHIPPED and not experimental:
        raise UserInputError(FP8_BELOW_BAR + "; pass --fp8_experimental to run it anyway", where="--fp8")
    if importlib.util.find_spec("torchao") is None:
        raise UserInputError("torchao is not installed (pip install -e .[gpu])", where="--fp8")


def decoder_linear_filter(module: torch.nn.Module, fqn: str) -> bool:
    """Which linears get fp8: the decoder layers' projections whose dimensions suit the fp8 matmul (multiples
    of 16); not lm_head, whose output is the loss's input."""
    return (isinstance(module, torch.nn.Linear) and ".layers." in f".{fqn}"
            and module.in_features % FP8_TOKEN_MULTIPLE == 0 and module.out_features % FP8_TOKEN_MULTIPLE == 0)


def apply_float8(model: torch.nn.Module, recipe: str) -> int:
    """Swap the decoder layers' nn.Linear modules for torchao Float8Linear; returns how many were swapped."""
    from torchao.float8 import Float8LinearConfig, convert_to_float8_training
    from torchao.float8.float8_linear import Float8Linear

    convert_to_float8_training(model, config=Float8LinearConfig.from_recipe_name(recipe),
                               module_filter_fn=decoder_linear_filter)
    return sum(isinstance(m, Float8Linear) for m in model.modules())
