"""train.py with ``--plugin 3d`` on CPU: colossalai's HybridParallel plugin over gloo ranks in fp32, tensor parallel
across them. Stand-ins: colossalai's CPU accelerator made to take the arguments the shardformer layers pass to its
RNG calls, fp32 for want of CPU mixed precision, and torch's AdamW in place of HybridAdam (whose CPU kernel would be
JIT-compiled first). Tensor-parallel training, its sharded save and exact resume are tested on CPU with it."""
from colossal_llama2.training import loop
from colossal_llama2.training.plugins import factory as plugins
from colossal_llama2.utils.errors import run_cli
from tests.helpers.cpu_accelerator import patch_rng_calls
from train import main

patch_rng_calls()
plugins.GPU_PLUGINS = tuple(p for p in plugins.GPU_PLUGINS if p != "3d")
_make_optimizer, _precision_for = loop.make_optimizer, loop.precision_for


def make_optimizer(model, **kwargs):
    return _make_optimizer(model, **{**kwargs, "use_hybrid_adam": False})


def precision_for(plugin, mixed_precision, cuda, *args):
    return "fp32" if plugin == "3d" else _precision_for(plugin, mixed_precision, cuda, *args)


loop.make_optimizer, loop.precision_for = make_optimizer, precision_for
run_cli(main)
