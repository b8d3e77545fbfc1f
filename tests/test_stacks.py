"""What differs between the two transformers stacks (``make install TRANSFORMERS=4`` or ``5``), as a user meets it."""
from __future__ import annotations

import pytest
import torch

from colossal_llama2.training.plugins.factory import check_plugin_args, shardformer_imports
from colossal_llama2.utils.errors import UserInputError
from colossal_llama2.utils.stack import transformers_5
from tests.helpers.distributed import REPO_ROOT, run_script


def test_3d_is_planned_on_both_stacks_and_refused_only_for_want_of_gpus(tmp_path, tiny_model_dir):
    """colossalai's own shardformer policies import on transformers 4 only; on 5 the head-sharding policy
    (plugins/tensor_parallel.py) takes their place, so --plugin 3d passes the checks on either and is refused on CPU
    only because it needs GPUs."""
    assert shardformer_imports() != transformers_5()
    with pytest.raises(UserInputError, match="needs CUDA GPUs"):
        check_plugin_args("3d", cuda=False, world_size=2, tp=2, num_heads=4, num_kv_heads=2, mixed_precision=None,
                          vocab_size=1000)
    proc = run_script([str(REPO_ROOT / "train.py"), "--pretrained", str(tiny_model_dir), "--dataset", str(tmp_path),
                       "--plugin", "3d", "--save_dir", str(tmp_path / "out")])
    assert proc.returncode != 0 and "Traceback" not in proc.stderr + proc.stdout
    (line,) = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert line.startswith("error: --plugin: plugin '3d' needs CUDA GPUs")


@pytest.mark.parametrize("model_type", ["llama", "qwen2", "qwen3", "mistral"])
def test_the_fused_rmsnorm_is_checked_against_this_stacks_classes(model_type, monkeypatch):
    """The fused RMSNorm replaces the family's RMSNorm forward: it runs only while the installed class computes the
    same numbers (checked on CPU at startup); a class that changed keeps its own forward, auto says so."""
    from colossal_llama2.model.families import family_of
    from colossal_llama2.training.kernels import fused_ops

    family = family_of(model_type)
    assert fused_ops.family_norm_matches(family)
    assert fused_ops.resolve_fusion("on", "auto", "zero2", cuda=True, model_type=model_type).norm
    fused_ops.family_norm_matches.cache_clear()
    norm_type = family.rms_norm_type()
    monkeypatch.setattr(norm_type, "forward", lambda self, x: self.weight * x)  # a class whose math changed
    try:
        assert not fused_ops.family_norm_matches(family)
        assert not fused_ops.resolve_fusion("auto", "auto", "zero2", cuda=True, model_type=model_type).norm
        with pytest.raises(UserInputError, match="no longer computes LLaMA's RMSNorm"):
            fused_ops.resolve_fusion("on", "auto", "zero2", cuda=True, model_type=model_type)
    finally:
        fused_ops.family_norm_matches.cache_clear()


def test_auto_picks_liger_for_zero2_on_either_stack(monkeypatch):
    from colossal_llama2.training.kernels import fused_ops, liger

    monkeypatch.setattr(liger, "liger_available", lambda cuda: (True, ""))
    fusion = fused_ops.resolve_fusion("auto", "auto", "zero2", cuda=True, model_type="llama")
    assert fusion.liger and fusion.norm


@pytest.mark.parametrize("family", ["llama3", "qwen3", "gemma3", "smollm3"])
def test_a_lazily_built_model_materialises_its_rotary_buffers(family):
    """gemini and 3d build the model under colossalai's LazyInitContext. transformers 5's rotary modules initialise
    inv_freq and original_inv_freq from each other, which the context replays without end (RecursionError); the
    buffers are rebuilt eagerly and equal an eagerly built model's."""
    from colossalai.lazy import LazyInitContext
    from transformers import AutoModelForCausalLM

    from colossal_llama2.tiny_base import family_known
    from colossal_llama2.training.model_setup import rebuild_rotary_buffers
    from tests.test_tensor_parallel import tiny_config

    if not family_known(family):
        pytest.skip(f"{family} needs the transformers 5 stack")
    config = tiny_config(family)
    AutoModelForCausalLM.from_config(config)  # imports the modeling module outside the context (it patches torch)
    with LazyInitContext(default_device=torch.device("cpu")):
        lazy = AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32)
    rebuild_rotary_buffers(lazy, torch.device("cpu"))
    LazyInitContext.materialize(lazy)
    eager = AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32)
    expected = dict(eager.named_buffers())
    assert any("inv_freq" in name for name in expected)
    for name, buffer in lazy.named_buffers():
        assert torch.equal(buffer, expected[name]), name


def test_models_load_without_hub_kernels(tmp_path):
    """transformers 5 kernelizes every from_pretrained model by default, fetching kernels from the Hub on GPUs (code
    run from the network; an error offline). Loading through the project's code keeps the model's own modules."""
    proc = run_script(["-c", f"""
import os
os.environ.pop("USE_HUB_KERNELS", None)
import colossal_llama2
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM
LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                             vocab_size=100)).save_pretrained({str(tmp_path)!r})
model = AutoModelForCausalLM.from_pretrained({str(tmp_path)!r})
print("USE_KERNELS", getattr(model, "use_kernels", False))
"""])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split("USE_KERNELS ")[1].split()[0] == "False"
