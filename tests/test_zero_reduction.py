"""zero2's gradient reduction (training/plugins/zero_reduction.py) leaves the library's gradient shards (CPU, gloo)."""
from __future__ import annotations

import types

import pytest
import torch

from colossal_llama2.training.plugins.zero_reduction import reduced_shard, speed_up_zero_reduction
from tests.helpers.distributed import REPO_ROOT, run_distributed


def test_two_ranks_get_the_library_gradient_shards_and_steps():
    """Two accumulated backward passes over buckets smaller than a weight, padded layers, the communication
    stream on: bit-equal bf16 shards and weights after the step, each shard a view of its bucket's part."""
    proc = run_distributed(REPO_ROOT / "tests" / "scripts" / "zero_reduction_equivalence.py", nproc=2, timeout=240)
    assert proc.stdout.count("EQUIVALENT") == 2, proc.stdout[-3000:]


def test_one_rank_keeps_the_concatenated_bucket_without_a_collective():
    flat = torch.arange(6.0)
    assert reduced_shard(flat, types.SimpleNamespace(world_size=1)) is flat


@pytest.mark.parametrize("change, value", [("_partition_grads", False), ("_fp8_communication", True),
                                           ("_communication_dtype", torch.float32)])
def test_the_library_reduction_stays_where_it_differs(monkeypatch, change, value):
    """zero1 (gradients not partitioned), fp8 or another communication dtype: not installed."""
    from colossalai.zero.low_level.low_level_optim import LowLevelZeroOptimizer

    optimizer = object.__new__(LowLevelZeroOptimizer)
    fields = dict(_partition_grads=True, _fp8_communication=False, _communication_dtype=None, grad_handles=[],
                  pg_to_bucket_store={"pg": types.SimpleNamespace(sizes=[2])})
    fields[change] = value
    optimizer.__dict__.update(fields)
    assert speed_up_zero_reduction(optimizer) is None
    assert "_run_reduction" not in optimizer.__dict__
    fields[change] = {"_partition_grads": True, "_fp8_communication": False, "_communication_dtype": None}[change]
    optimizer.__dict__.update(fields)
    assert "AVG" in speed_up_zero_reduction(types.SimpleNamespace(optim=optimizer))
    assert "_run_reduction" in optimizer.__dict__
