"""The schedule, the weight-decay groups and NEFTune's noise, against hand-worked values (no golden runs)."""
from __future__ import annotations

import math

import pytest
import torch

from colossal_llama2.training.neftune import NEFTune
from colossal_llama2.training.optim import StepPlan, make_scheduler, param_groups


def test_warmup_then_cosine_to_a_tenth_by_hand():
    weight = torch.nn.Parameter(torch.zeros(2, 2))
    optimizer = torch.optim.SGD([weight], lr=1.0)
    scheduler = make_scheduler(optimizer, warmup_steps=2, total_steps=6)
    lrs = []
    for _ in range(7):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    # warmup: 1/2, 2/2; then 0.1 + 0.9 * (1 + cos(pi * k / 4)) / 2 for k = 0..4, held at 0.1 after the end
    half = 0.1 + 0.9 * (1 + math.cos(math.pi / 4)) / 2
    assert lrs == pytest.approx([0.5, 1.0, 1.0, half, 0.55, 0.1 + 0.9 * (1 - math.cos(math.pi / 4)) / 2, 0.1])


def test_step_plan_counts_accumulation_and_the_default_warmup():
    plan = StepPlan.make(samples_per_rank=37, micro_batch_size=4, accumulation_steps=2, num_epochs=3,
                         max_steps=0, warmup_steps=None)
    assert (plan.steps_per_epoch, plan.total_steps) == (5, 15)  # ceil(ceil(37/4)/2) = ceil(10/2)
    assert plan.warmup_steps == 1  # ceil(2.5% of 15)


def test_matrices_decay_norms_and_biases_do_not_and_frozen_are_left_out():
    model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 4, bias=True), torch.nn.LayerNorm(4),
                                torch.nn.Linear(4, 2, bias=False))
    model[3].weight.requires_grad_(False)
    decay, no_decay = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(model[0].weight), id(model[1].weight)}
    assert {id(p) for p in no_decay["params"]} == {id(model[1].bias), id(model[2].weight), id(model[2].bias)}


@pytest.mark.parametrize("alpha", [5.0, 15.0])
def test_neftune_noise_is_uniform_with_bound_alpha_over_sqrt_length_times_dim(alpha):
    torch.manual_seed(0)
    dim, length = 64, 100
    embedding = torch.nn.Embedding(50, dim)
    neft = NEFTune(embedding, alpha)
    ids = torch.randint(0, 50, (2, length))
    mask = torch.ones(2, length, dtype=torch.long)
    mask[1, 25:] = 0  # sample 1 is 25 tokens long: its noise is twice as large (sqrt(100/25))
    neft.set_lengths(mask)
    clean = embedding.weight[ids]
    noise = embedding(ids) - clean
    for row, real_length in ((0, 100), (1, 25)):
        bound = alpha / math.sqrt(real_length * dim)
        assert noise[row].abs().max().item() <= bound * (1 + 1e-6)
        # uniform on [-b, b]: mean |x| = b/2, and values fill the range
        assert noise[row].abs().mean().item() == pytest.approx(bound / 2, rel=0.05)
        assert noise[row].abs().max().item() > 0.98 * bound
    embedding.eval()
    assert torch.equal(embedding(ids), clean)  # evaluation sees no noise
