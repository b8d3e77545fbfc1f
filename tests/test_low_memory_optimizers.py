"""--optimizer adamw_bf16|adamw8bit (torchao): flags, the planner's bytes, and on CPU (ddp over 2 ranks) a
save and exact resume of the 8-bit states from the per-rank files."""
from __future__ import annotations

import importlib.util

import pytest
import torch

from colossal_llama2.training.optim import check_optimizer
from colossal_llama2.training.plugins.choice import GB, ModelShape, choose_plugin, estimate_peak_bytes
from colossal_llama2.training.plugins.factory import precision_for
from colossal_llama2.utils.errors import UserInputError
from tests.helpers.distributed import run_distributed
from tests.helpers.optional import import_torchao, torchao_env
from tests.test_train import TRAIN, base_args, data, read_metrics  # noqa: F401  (data: the module fixture)

H200 = 139.7 * 2**30
# LLaMA-2-13B's shape with the 69,104-row vocabulary of the benchmarks
SHAPE_13B = ModelShape(params=13_723_586_560, layers=40, hidden=5120, vocab=69_104)


def test_low_memory_optimizers_need_zero2_or_ddp_and_bf16():
    for plugin in ("gemini", "gemini_auto", "zero2_cpu", "3d"):
        with pytest.raises(UserInputError, match="--optimizer"):
            check_optimizer("adamw8bit", plugin=plugin, precision="bf16")
    with pytest.raises(UserInputError, match="bf16"):
        check_optimizer("adamw_bf16", plugin="zero2", precision="fp16")
    if importlib.util.find_spec("torchao") is None:
        with pytest.raises(UserInputError, match="needs torchao"):
            check_optimizer("adamw8bit", plugin="zero2", precision="bf16")
        import_torchao()
    check_optimizer("adamw8bit", plugin="zero2", precision="bf16")
    check_optimizer("adamw_bf16", plugin="ddp", precision="fp32")
    check_optimizer("adamw", plugin="gemini", precision="fp16")


def test_default_precision_is_bf16_where_the_gpu_has_it():
    assert precision_for("zero2", None, cuda=True, bf16_supported=True) == "bf16"
    assert precision_for("zero2", None, cuda=True, bf16_supported=False) == "fp16"
    assert precision_for("zero2", "fp16", cuda=True, bf16_supported=True) == "fp16"
    assert precision_for("ddp", "bf16", cuda=False) == "fp32"


def test_planner_counts_the_low_memory_states_and_picks_zero2_for_13b():
    tokens = 4096
    # 12 bytes of master weights and states per parameter with fp32 AdamW, 4 with bf16 states, 2 with 8-bit
    full, bf16, eight = (estimate_peak_bytes("zero2", SHAPE_13B, gpus=1, tokens_per_micro_batch=tokens,
                                             grad_checkpoint=True, optimizer=o) for o in ("adamw", "adamw_bf16",
                                                                                          "adamw8bit"))
    assert full - bf16 == pytest.approx(8 * SHAPE_13B.params) and bf16 - eight == pytest.approx(2 * SHAPE_13B.params)
    assert estimate_peak_bytes("zero2", SHAPE_13B, gpus=4, tokens_per_micro_batch=tokens, grad_checkpoint=True,
                               optimizer="adamw8bit") < eight
    plugin, _ = choose_plugin(SHAPE_13B, cuda=True, gpus=1, device_bytes=H200, tokens_per_micro_batch=tokens,
                              grad_checkpoint=True)
    assert plugin not in ("zero2", "gemini"), "fp32 AdamW at 13b does not fit one H200"
    for optimizer in ("adamw_bf16", "adamw8bit"):
        plugin, why = choose_plugin(SHAPE_13B, cuda=True, gpus=1, device_bytes=H200, tokens_per_micro_batch=tokens,
                                    grad_checkpoint=True, optimizer=optimizer)
        assert plugin == "zero2" and optimizer in why
    with pytest.raises(UserInputError, match="does not fit"):
        choose_plugin(SHAPE_13B, cuda=True, gpus=1, device_bytes=40 * GB, tokens_per_micro_batch=tokens,
                      grad_checkpoint=True, optimizer="adamw8bit")


def test_8bit_states_save_per_rank_and_resume_exactly(tmp_path, tiny_model_dir, data):  # noqa: F811
    env = torchao_env()
    first = tmp_path / "first"
    args = base_args(tiny_model_dir, data, first, **{"--optimizer": "adamw8bit", "--max_steps": 4,
                                                     "--save_interval": 2})
    run_distributed(TRAIN, args, timeout=400, env=env)
    saved = first / "ckpt" / "epoch-0_step-2" / "optimizer"
    assert sorted(p.name for p in saved.iterdir()) == ["rank-00000.pt", "rank-00001.pt"]
    import_torchao()
    states = torch.load(saved / "rank-00000.pt", weights_only=False)["state_dict"]["state"]
    kinds = {type(v).__name__ for s in states.values() for k, v in s.items() if k == "exp_avg"}
    assert "OptimState8bit" in kinds, kinds  # the large matrices keep 8-bit states on disk

    again = tmp_path / "again"
    resumed = base_args(tiny_model_dir, data, again, **{"--optimizer": "adamw8bit", "--max_steps": 4,
                                                        "--load_checkpoint": first / "ckpt" / "epoch-0_step-2"})
    run_distributed(TRAIN, resumed, timeout=400, env=env)
    full, _ = read_metrics(first / "tb")
    part, _ = read_metrics(again / "tb")
    assert sorted(part) == [3, 4]
    for step in (3, 4):
        assert part[step]["loss"] == full[step]["loss"], step

    # fp32 AdamW cannot take these states: one line naming the flag to use
    from colossal_llama2.training.checkpoint.optimizer_states import load_rank_states

    plain = torch.optim.AdamW(torch.nn.Linear(2, 2).parameters())
    with pytest.raises(UserInputError, match="--optimizer"):
        load_rank_states(plain, saved)
