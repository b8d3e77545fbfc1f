"""train.py with ``--plugin zero2`` on CPU: colossalai's LowLevelZero plugin over gloo ranks, with the stream
stand-ins of ``zero_reduction_equivalence.allow_cpu`` and torch's AdamW in place of HybridAdam (whose CPU kernel
would be JIT-compiled first). zero2's sharded save, resume, stop and accumulation are tested on CPU with it."""
from colossal_llama2.training import loop
from colossal_llama2.training.plugins import factory as plugins
from colossal_llama2.utils.errors import run_cli
from tests.scripts.zero_reduction_equivalence import allow_cpu
from train import main

allow_cpu()
plugins.GPU_PLUGINS = tuple(p for p in plugins.GPU_PLUGINS if p != "zero2")
_make_optimizer = loop.make_optimizer


def make_optimizer(model, **kwargs):
    return _make_optimizer(model, **{**kwargs, "use_hybrid_adam": False})


loop.make_optimizer = make_optimizer
run_cli(main)
