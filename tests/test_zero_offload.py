"""zero2_cpu's pipelined optimizer step (training/plugins/zero_offload.py): bit-equal to the library's step with
``cpu_offload`` over 2 gloo ranks, its chunking, and where it is not installed."""
from __future__ import annotations

import types

import pytest
import torch

from colossal_llama2.training.plugins.zero_offload import HostAdam, chunked_segments, host_thread_warning, install_offload_step
from tests.helpers.distributed import REPO_ROOT, run_distributed


def test_two_ranks_update_exactly_like_the_library_step():
    """Three clipped steps, two groups, padded layers, weights split over chunks: masters, states, weights equal."""
    proc = run_distributed(REPO_ROOT / "tests" / "scripts" / "zero_offload_equivalence.py", nproc=2, timeout=240)
    assert proc.stdout.count("EQUIVALENT over 3 steps") == 2, proc.stdout[-3000:]


def test_chunks_split_weights_and_cover_every_element_once():
    sizes = [2500, 10, 990, 1000, 3]
    rows = [(torch.arange(n, dtype=torch.float32) + 10_000 * i, torch.zeros(n, dtype=torch.bfloat16),
             torch.zeros(n, dtype=torch.bfloat16), {"id": i}) for i, n in enumerate(sizes)]
    chunks = chunked_segments(rows, 1000)
    assert [sum(s.numel for s in chunk) for chunk in chunks] == [1000, 1000, 1000, 1000, 503]
    for chunk in chunks:  # each segment at its own place in the chunk's buffers, in order, without gaps
        assert [s.offset for s in chunk] == [sum(t.numel for t in chunk[:k]) for k in range(len(chunk))]
    for i, (master, grad, slot, group) in enumerate(rows):
        mine = [s for chunk in chunks for s in chunk if s.state_of is master]
        assert torch.equal(torch.cat([s.master for s in mine]), master)  # views, in order, whole
        assert [s.start for s in mine] == [sum(t.numel for t in mine[:k]) for k in range(len(mine))]
        assert all(s.group is group and s.grad.data_ptr() == grad[s.start:].data_ptr()
                   and s.slot.data_ptr() == slot[s.start:].data_ptr() for s in mine)
    assert [[s.numel for s in chunk] for chunk in chunks] == [[1000], [1000], [500, 10, 490], [500, 500], [500, 3]]


def test_a_segment_updates_its_part_of_the_optimizer_state():
    master = torch.zeros(10)
    optimizer = types.SimpleNamespace(state={master: {"exp_avg": torch.arange(10.0)}})
    (chunk,) = chunked_segments([(master, master, master, {})], 4)[1:2]
    assert chunk[0].state(optimizer, "exp_avg").tolist() == [4.0, 5.0, 6.0, 7.0]


def _offload_optimizer(optim, **changes):
    from colossalai.zero.low_level.low_level_optim import LowLevelZeroOptimizer

    optimizer = object.__new__(LowLevelZeroOptimizer)
    fields = dict(_cpu_offload=True, _master_weights=True, _overlap_allgather=False, _fp8_communication=False,
                  pg_to_grad_store={"pg": None}, grad_handles=[], _dtype=torch.bfloat16, optim=optim)
    optimizer.__dict__.update({**fields, **changes})
    return optimizer


@pytest.mark.parametrize("change", [{"_cpu_offload": False}, {"_master_weights": False},
                                    {"_overlap_allgather": True}, {"pg_to_grad_store": {"a": 1, "b": 2}}])
def test_the_library_step_stays_where_it_differs(change):
    """Without offload, without master weights, with overlapped gathers or several gradient stores: not installed."""
    param = torch.nn.Parameter(torch.zeros(2))
    optimizer = _offload_optimizer(torch.optim.AdamW([param], fused=True), **change)
    assert install_offload_step(optimizer, 16) is None
    assert "step" not in optimizer.__dict__
    optimizer = _offload_optimizer(torch.optim.AdamW([param], fused=True))
    assert "offloaded step pipelined" in install_offload_step(optimizer, 16)
    assert "step" in optimizer.__dict__


@pytest.mark.parametrize("kwargs, supported", [({"fused": True}, True), ({}, False),
                                               ({"fused": True, "amsgrad": True}, False)])
def test_host_adam_drives_fused_adamw_only(kwargs, supported):
    """torch's AdamW only where its fused kernel is what the library step would run (no amsgrad)."""
    param = torch.nn.Parameter(torch.zeros(2))
    assert HostAdam.supports(torch.optim.AdamW([param], **kwargs)) is supported


def test_a_rank_starved_of_host_threads_is_told_what_to_export():
    """torchrun's OMP_NUM_THREADS=1 for 8 ranks on 128 cores: the host's Adam would run on 1 of its 16 cores."""
    said = host_thread_warning(1, 128, 8)
    assert said and "OMP_NUM_THREADS=16" in said
    assert host_thread_warning(16, 128, 8) is None
    assert host_thread_warning(16, 16, 1) is None  # one rank: torchrun leaves the threads alone
    assert host_thread_warning(1, 2, 2) is None  # one core per rank is all there is
