"""fp8 matmuls for the decoder layers' linear projections (``--fp8``).

* ``tensorwise`` / ``rowwise``: torchao's float8 training (``convert_to_float8_training``): every
  ``nn.Linear`` inside the decoder layers becomes a ``Float8Linear`` that casts its input, weight and output
  gradient to float8 with dynamic scales (one per tensor, or one per row) and runs the three matmuls of
  forward and backward as ``torch._scaled_mm``. The parameters stay the same bf16 ``Parameter`` objects, so
  the plugin's optimizer, gradient hooks and checkpoints are untouched. lm_head and the embedding stay bf16
  (the loss is computed from lm_head's output: its precision is the loss's). Applied after boosting, on the
  model's own modules; with ``--compile`` the casts fuse into the layer's compiled graph (without it each
  cast is several eager kernels, which cost more than the fp8 matmul saves).
* ``colossalai``: the plugin's own ``use_fp8`` (zero2, zero2_cpu, 3d): every ``F.linear`` call on a model
  parameter, lm_head included, is rewritten into colossalai's compiled tensorwise fp8 linear by a parameter
  op hook.

fp8 is not a default anywhere and is refused unless ``--fp8_experimental`` is given: measured on an H200 it
has not reached the speed at which it would be worth its loss of precision (see ``FP8_MEASURED`` and
docs/benchmarks.md, "fp8").
"""
from __future__ import annotations

import importlib.util

import torch

from ..utils.errors import UserInputError

FP8_TOKEN_MULTIPLE = 16  # fp8 matmuls take dimensions in multiples of 16, the token count included
FP8_CHOICES = ("off", "tensorwise", "rowwise", "colossalai")
TORCHAO_RECIPES = ("tensorwise", "rowwise")
FP8_PLUGINS = {"tensorwise": ("zero2", "zero2_cpu", "ddp"), "rowwise": ("zero2", "zero2_cpu", "ddp"),
               "colossalai": ("zero2", "zero2_cpu", "3d")}
# What the refusal says; the measurements behind it are in docs/benchmarks.md ("fp8").
FP8_MEASURED = ("fp8 is not yet faster enough to pay for its precision loss: the bar is 1.2x the best bf16 "
                "path at 7b, and on one H200 (7b_8l, zero2) the best fp8 setting measured "
                "{best} (docs/benchmarks.md, 'fp8')")
FP8_BEST_MEASURED = "not yet measured"


def check_fp8(choice: str, *, plugin: str, capability: tuple[int, int] | None, experimental: bool,
              max_length: int) -> None:
    """Raise UserInputError, naming --fp8, for an fp8 setting that cannot or should not run here.

    ``capability``: the GPU's CUDA compute capability, None without one."""
    if choice == "off":
        return
    if plugin not in FP8_PLUGINS[choice]:
        raise UserInputError(f"--fp8 {choice} works with --plugin {', '.join(FP8_PLUGINS[choice])}, not "
                             f"{plugin}", where="--fp8")
    if max_length % FP8_TOKEN_MULTIPLE:
        # the weight gradient's matmul runs over the tokens: fp8 matmuls need that dimension in multiples of 16
        # (batches are padded to such widths, which must not pass --max_length)
        raise UserInputError(f"--fp8 needs a --max_length divisible by {FP8_TOKEN_MULTIPLE} (got {max_length})",
                             where="--fp8")
    if capability is None or capability < (8, 9):
        raise UserInputError("fp8 matmuls need a CUDA GPU of compute capability 8.9 or newer (Ada, Hopper)",
                             where="--fp8")
    if not experimental:
        raise UserInputError(FP8_MEASURED.format(best=FP8_BEST_MEASURED) +
                             "; pass --fp8_experimental to run it anyway", where="--fp8")
    if choice in TORCHAO_RECIPES and importlib.util.find_spec("torchao") is None:
        raise UserInputError("torchao is not installed (pip install -e .[gpu])", where="--fp8")


def decoder_linear_filter(module: torch.nn.Module, fqn: str) -> bool:
    """Which linears get fp8: the decoder layers' projections whose dimensions suit the fp8 matmul (multiples
    of 16); not lm_head, whose output is the loss's input."""
    return (isinstance(module, torch.nn.Linear) and ".layers." in f".{fqn}"
            and module.in_features % 16 == 0 and module.out_features % 16 == 0)


def apply_float8(model: torch.nn.Module, recipe: str) -> int:
    """Swap the decoder layers' nn.Linear modules for torchao Float8Linear; returns how many were swapped."""
    from torchao.float8 import Float8LinearConfig, convert_to_float8_training

    from torchao.float8.float8_linear import Float8Linear

    convert_to_float8_training(model, config=Float8LinearConfig.from_recipe_name(recipe),
                               module_filter_fn=decoder_linear_filter)
    return sum(isinstance(m, Float8Linear) for m in model.modules())
