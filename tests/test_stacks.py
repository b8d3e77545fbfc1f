"""What differs between the two transformers stacks (``make install TRANSFORMERS=4`` or ``5``), as a user meets it."""
from __future__ import annotations

import pytest

from colossal_llama2.training.plugins.factory import check_plugin_args, shardformer_imports
from colossal_llama2.utils.errors import UserInputError
from colossal_llama2.utils.stack import transformers_5
from tests.helpers.distributed import REPO_ROOT, run_script


def test_3d_is_refused_in_one_line_where_shardformer_does_not_import(tmp_path, tiny_model_dir):
    assert shardformer_imports() != transformers_5()
    if not transformers_5():  # transformers 4: refused only for want of GPUs
        with pytest.raises(UserInputError, match="needs CUDA GPUs"):
            check_plugin_args("3d", cuda=False, world_size=1, tp=1, num_heads=4, num_kv_heads=2, mixed_precision=None)
        return
    proc = run_script([str(REPO_ROOT / "train.py"), "--pretrained", str(tiny_model_dir), "--dataset", str(tmp_path),
                       "--plugin", "3d", "--save_dir", str(tmp_path / "out")])
    assert proc.returncode != 0 and "Traceback" not in proc.stderr + proc.stdout
    (line,) = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert line.startswith("error: --plugin: the 3d plugin needs colossalai's shardformer") and \
        "make install TRANSFORMERS=4" in line


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


def test_auto_leaves_liger_off_until_a_gpu_run_verifies_it_under_transformers_5(monkeypatch, caplog):
    from colossal_llama2.training.kernels import fused_ops, liger

    monkeypatch.setattr(liger, "liger_available", lambda cuda: (True, ""))
    fusion = fused_ops.resolve_fusion("auto", "auto", "zero2", cuda=True, model_type="llama")
    assert fusion.liger != transformers_5() and fusion.norm
    assert ("not yet verified on a GPU" in caplog.text) == transformers_5()
