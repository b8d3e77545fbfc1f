"""zero2's optimizer-step replacements give the library's numbers (CPU, one gloo rank)."""
from __future__ import annotations

import collections
import types

import pytest
import torch
import torch.distributed as dist

from colossal_llama2.training.plugins.zero_step import grad_norm_fp32, unscale_and_clip_grads


@pytest.fixture
def one_rank_group():
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield dist.group.WORLD
    dist.destroy_process_group()


def test_grad_norm_equals_the_library_fp64_norm(one_rank_group):
    from colossalai.zero.low_level.low_level_optim import LowLevelZeroOptimizer

    torch.manual_seed(0)
    grads = [torch.randn(n).to(torch.bfloat16) * s for n, s in ((1000, 1.0), (37, 30.0), (4096, 1e-3))]
    ours = grad_norm_fp32(object(), one_rank_group, grads)
    library = LowLevelZeroOptimizer._compute_grad_norm(object(), one_rank_group, grads)
    expected = torch.cat([g.double() for g in grads]).norm().item()
    assert library == pytest.approx(expected, rel=1e-6)
    assert ours == pytest.approx(expected, rel=1e-6)
    assert grad_norm_fp32(object(), one_rank_group, []) == 0.0


@pytest.mark.parametrize("clip, norm, scale, factor", [(1.0, 0.5, None, 1.0), (1.0, 4.0, None, 1 / (4.0 + 1e-6)),
                                                      (0.0, 4.0, 8.0, 1 / 8.0), (1.0, 64.0, 8.0, 1 / (64.0 + 8e-6))])
def test_unscale_and_clip_scales_like_the_library(clip, norm, scale, factor):
    from colossalai.zero.low_level.low_level_optim import LowLevelZeroOptimizer

    mixin = None if scale is None else types.SimpleNamespace(get_grad_div_scale=lambda: scale)
    fake = types.SimpleNamespace(mixed_precision_mixin=mixin, _clip_grad_norm=clip)
    grads = [torch.randn(10), torch.randn(3, 4)]
    ours, library = [g.clone() for g in grads], [g.clone() for g in grads]
    unscale_and_clip_grads(fake, ours, norm)
    LowLevelZeroOptimizer._unscale_and_clip_grads(fake, library, norm)
    for a, b, g in zip(ours, library, grads):
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(a, g * factor)


def test_clip_factor_goes_to_the_adam_step():
    """With the Adam kernel dividing, no pass over the gradients; the factor reaches HybridAdam.step once."""
    from colossal_llama2.training.plugins.zero_step import _adam_step_with_div_scale

    calls = []

    class FakeAdam:
        def step(self, closure=None, div_scale=-1):
            calls.append(div_scale)

    fake = types.SimpleNamespace(mixed_precision_mixin=None, _clip_grad_norm=1.0, _adam_divides=True)
    grads = [torch.ones(4)]
    step = _adam_step_with_div_scale(fake, FakeAdam())
    unscale_and_clip_grads(fake, grads, 4.0)
    step()
    unscale_and_clip_grads(fake, grads, 0.5)  # below the threshold: no division at all
    step()
    assert calls == [pytest.approx(4.0 + 1e-6), -1]
    assert torch.equal(grads[0], torch.ones(4))  # the gradients themselves were never touched


def test_weights_are_published_in_place_across_ranks():
    """Each rank's updated shard lands in its slot of every weight and the in-place all-gather fills the rest
    (2 gloo ranks; a weight whose size is not a multiple of 2 carries colossalai's padding)."""
    from tests.helpers.distributed import REPO_ROOT, run_distributed

    proc = run_distributed(REPO_ROOT / "tests" / "scripts" / "zero_publish.py", nproc=2, timeout=120)
    assert proc.stdout.count("published OK") == 2, proc.stdout[-2000:]
    assert proc.stdout.count("chunks of 8 OK") == 2 and proc.stdout.count("chunks of 0 OK") == 2, proc.stdout[-2000:]


def test_one_rank_updates_in_one_pass(one_rank_group):
    """With nothing to gather there is nothing to overlap: one Adam pass over every parameter, whatever the
    chunk size, and the weights take their masters' values."""
    from colossal_llama2.training.plugins.zero_step import update_and_publish

    working = [torch.zeros(4, dtype=torch.bfloat16), torch.zeros(6, dtype=torch.bfloat16)]
    fake = types.SimpleNamespace(_working_param_to_padded_working_param={w: w for w in working},
                                 param_to_pg={w: one_rank_group for w in working},
                                 pid_to_bucket_store={id(w): types.SimpleNamespace(local_rank=0, world_size=1)
                                                      for w in working})
    masters = [torch.zeros(4), torch.zeros(6)]
    passes = []

    def update(chunk):
        passes.append(len(chunk))
        for _, master, _ in chunk:
            master.fill_(0.5)

    update_and_publish(fake, [(w, m, None) for w, m in zip(working, masters)], update, chunk_numel=1)
    update_and_publish(fake, [], update, chunk_numel=1)
    assert passes == [2]
    assert all(torch.equal(w, torch.full_like(w, 0.5)) for w in working)


def test_chunks_close_at_the_size_and_keep_the_order():
    from colossal_llama2.training.plugins.zero_step import chunks_of

    triples = [(i, torch.zeros(n), None) for i, n in enumerate([3, 6, 2, 2, 9, 1])]
    assert [[t[0] for t in c] for c in chunks_of(triples, 5)] == [[0, 1], [2, 3, 4], [5]]
    assert [[t[0] for t in c] for c in chunks_of(triples, 100)] == [[0, 1, 2, 3, 4, 5]]


def test_publishing_refuses_a_weight_detached_from_its_buffer(one_rank_group):
    from colossal_llama2.training.plugins.zero_step import publish_working_params

    working = torch.zeros(4, dtype=torch.bfloat16)
    fake = types.SimpleNamespace(_working_param_to_padded_working_param={working: torch.zeros(4, dtype=torch.bfloat16)},
                                 param_to_pg={working: one_rank_group},
                                 pid_to_bucket_store={id(working): types.SimpleNamespace(local_rank=0, world_size=1)})
    with pytest.raises(RuntimeError, match="no longer shares storage"):
        publish_working_params(fake, [(working, torch.ones(4), None)])


def test_adam_update_launches_once_per_gradient_dtype(monkeypatch):
    """colossalai's kernel reads all gradients of a launch as the first one's dtype: a bf16 and an fp32 gradient
    must go to separate launches, each with its own tensors (the kernel itself is faked: it needs CUDA)."""
    import colossalai.utils

    from colossal_llama2.training.plugins.zero_step import adam_update

    launches = []
    monkeypatch.setattr(colossalai.utils, "multi_tensor_applier",
                        lambda op, flag, lists, *hyper: launches.append(([g.dtype for g in lists[0]], hyper)))
    adam = types.SimpleNamespace(state=collections.defaultdict(dict), gpu_adam_op=None, _dummy_overflow_buf=None, adamw_mode=True)
    masters = [torch.zeros(3), torch.zeros(5), torch.zeros(2)]
    grads = [torch.ones(3, dtype=torch.bfloat16), torch.ones(5), torch.ones(2, dtype=torch.bfloat16)]
    group = {"lr": 0.1, "betas": (0.9, 0.95), "eps": 1e-8, "bias_correction": True, "weight_decay": 0.0}
    adam_update(adam, group, list(zip([None] * 3, masters, grads)), div_scale=4.0)
    adam_update(adam, group, list(zip([None] * 3, masters, grads)), div_scale=1.0)
    assert [dtypes for dtypes, _ in launches] == [[torch.bfloat16, torch.bfloat16], [torch.float32]] * 2
    assert [hyper[4] for _, hyper in launches] == [1, 1, 2, 2]  # the step count, kept per master as HybridAdam does
    assert [hyper[-1] for _, hyper in launches] == [4.0, 4.0, -1, -1]  # -1: the kernel divides by nothing
    assert all(adam.state[m]["step"] == 2 and adam.state[m]["exp_avg"].shape == m.shape for m in masters)


def test_publishing_nothing_is_a_no_op(one_rank_group):
    """A step where no parameter got a gradient (all frozen layers skipped) publishes nothing, without error."""
    from colossal_llama2.training.plugins.zero_step import publish_working_params

    from colossal_llama2.training.plugins import zero_step

    def must_not_run(*args, **kwargs):
        raise AssertionError("nothing to publish, yet a copy or a gather was launched")

    fake = types.SimpleNamespace(_working_param_to_padded_working_param={}, param_to_pg={}, pid_to_bucket_store={})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(zero_step.torch, "_foreach_copy_", must_not_run)
        patch.setattr(zero_step.dist, "all_gather_into_tensor", must_not_run)
        assert zero_step.start_publishing(fake, []) == []
        publish_working_params(fake, [])
