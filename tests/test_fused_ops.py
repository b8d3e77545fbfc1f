"""Fused kernels: the same numbers as transformers' LLaMA and F.cross_entropy, forward and backward."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from colossal_llama2.training.kernels import fused_ops
from colossal_llama2.training.kernels.fused_ops import (Fusion, fuse_rms_norms, fused_cross_entropy, resolve_fusion,
                                                shifted_labels)
from colossal_llama2.utils.errors import UserInputError


def _reference_loss(logits, labels):
    return F.cross_entropy(logits.float(), labels, ignore_index=-100, reduction="sum")


@pytest.mark.parametrize("block_rows", [None, 1, 7, 64])
def test_fused_cross_entropy_matches_reference_fp32(block_rows):
    torch.manual_seed(0)
    logits = torch.randn(37, 101) * 3
    labels = torch.randint(0, 101, (37,))
    labels[::5] = -100
    a = logits.clone().requires_grad_()
    b = logits.clone().requires_grad_()
    loss = fused_cross_entropy(a, labels, block_rows=block_rows)
    ref = _reference_loss(b, labels)
    (loss * 0.37).backward()
    (ref * 0.37).backward()
    assert loss.dtype == torch.float32
    # fp32 sums in another order: 1.02e-6 apart once transformers 5 is imported
    assert loss.item() == pytest.approx(ref.item(), rel=3e-6)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7)
    assert (a.grad[::5] == 0).all()  # ignored rows get no gradient


def test_fused_cross_entropy_bf16_keeps_bf16_and_matches():
    torch.manual_seed(1)
    logits = (torch.randn(64, 300) * 4).to(torch.bfloat16)
    labels = torch.randint(0, 300, (64,))
    a = logits.clone().requires_grad_()
    b = logits.clone().requires_grad_()
    loss = fused_cross_entropy(a, labels, block_rows=16)
    ref = _reference_loss(b, labels)
    loss.backward()
    ref.backward()
    assert a.grad.dtype == torch.bfloat16
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    torch.testing.assert_close(a.grad.float(), b.grad.float(), rtol=2e-2, atol=1e-3)


def test_fused_cross_entropy_fp16_scales_in_fp32():
    """fp16 logits: the stored gradient is fp32, so tiny probabilities survive until the loss scale is applied."""
    logits = torch.zeros(2, 40000, dtype=torch.float16)  # softmax 2.5e-5 per column: fine in fp32
    logits[:, 0] = 10.0  # the rest drop to ~1e-9, below fp16's smallest subnormal (6e-8)
    labels = torch.tensor([0, 1])
    a = logits.clone().requires_grad_()
    (fused_cross_entropy(a, labels) * 1024).backward()
    assert a.grad.dtype == torch.float16
    assert (a.grad[:, 2:] > 0).all()  # ~1e-9 * 1024, representable after scaling
    b = logits.clone().requires_grad_()
    (_reference_loss(b, labels) * 1024).backward()
    torch.testing.assert_close(a.grad.float(), b.grad.float(), rtol=1e-3, atol=1e-9)


def test_fused_cross_entropy_without_grad_and_all_ignored():
    logits = torch.randn(5, 11)
    labels = torch.full((5,), -100)
    with torch.no_grad():
        assert fused_cross_entropy(logits, labels).item() == 0.0
    a = logits.clone().requires_grad_()
    fused_cross_entropy(a, labels).backward()
    assert (a.grad == 0).all()
    with pytest.raises(ValueError, match="expected logits"):
        fused_cross_entropy(logits, labels[:3])


def test_shifted_labels_equal_slicing_the_logits():
    """loss over all positions with shifted labels == loss over logits[:, :-1] against labels[:, 1:]."""
    torch.manual_seed(2)
    logits = torch.randn(3, 9, 17)
    labels = torch.randint(0, 17, (3, 9))
    labels[1, :4] = -100
    shifted = shifted_labels(labels)
    assert (shifted[:, -1] == -100).all() and torch.equal(shifted[:, :-1], labels[:, 1:])
    ours = fused_cross_entropy(logits.reshape(-1, 17), shifted.reshape(-1))
    ref = _reference_loss(logits[:, :-1].reshape(-1, 17), labels[:, 1:].reshape(-1))
    assert ours.item() == pytest.approx(ref.item(), rel=1e-6)


def _tiny_llama(seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         attn_implementation="sdpa")
    return LlamaForCausalLM(config)


def test_reference_rms_norm_is_transformers_math():
    model = _tiny_llama()
    norm = model.model.norm
    norm.weight.data.uniform_(0.5, 1.5)
    x = torch.randn(2, 8, 64)
    assert torch.equal(fused_ops.rms_norm(x, norm.weight, norm.variance_epsilon), norm(x))
    xb = x.to(torch.bfloat16)
    assert torch.equal(fused_ops.rms_norm(xb, norm.weight.to(torch.bfloat16), norm.variance_epsilon),
                       norm.to(torch.bfloat16)(xb))


def test_fused_norms_match_transformers_within_one_bf16_ulp():
    reference, fused = _tiny_llama(), _tiny_llama()
    assert fuse_rms_norms(fused) == 5  # 2 per decoder layer + the final norm
    ids = torch.randint(0, 97, (2, 12))
    # fp32: the same numbers, forward and backward
    out = {}
    for name, model in (("reference", reference), ("fused", fused)):
        logits = model(input_ids=ids).logits
        loss = fused_cross_entropy(logits.reshape(-1, 97), shifted_labels(ids).reshape(-1))
        loss.backward()
        out[name] = (loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()})
    assert out["fused"][0] == pytest.approx(out["reference"][0], rel=1e-6)
    for name, grad in out["reference"][1].items():
        torch.testing.assert_close(out["fused"][1][name], grad, rtol=1e-5, atol=1e-6, msg=name)
    assert list(fused.state_dict()) == list(reference.state_dict())  # checkpoints are untouched
    # bf16: one rounding instead of two, so at most one ulp apart
    norm_ref, norm_fused = reference.model.norm.to(torch.bfloat16), fused.model.norm.to(torch.bfloat16)
    norm_ref.weight.data.uniform_(0.5, 1.5)
    norm_fused.weight.data.copy_(norm_ref.weight.data)
    x = torch.randn(4, 16, 64, dtype=torch.bfloat16)
    a, b = norm_ref(x).float(), norm_fused(x).float()
    assert ((a - b).abs() <= a.abs() * 2**-7 + 1e-6).all()
    # mixed dtypes (bf16 weight, fp32 activations) fall back to transformers' math
    assert torch.equal(norm_fused(x.float()), norm_ref(x.float()))


@pytest.mark.slow
def test_compiled_loss_matches_eager():
    """The loss kernel through Inductor (its CPU backend here, Triton on GPUs): same loss and gradient."""
    torch.manual_seed(3)
    logits = torch.randn(50, 333) * 2
    labels = torch.randint(0, 333, (50,))
    labels[7] = -100
    a = logits.clone().requires_grad_()
    b = logits.clone().requires_grad_()
    (fused_cross_entropy(a, labels, compiled=True, block_rows=20) * 0.5).backward()
    (_reference_loss(b, labels) * 0.5).backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7)


def test_resolve_fusion_defaults_and_refusals():
    assert resolve_fusion("auto", "auto", "ddp", cuda=False) == Fusion(norm=False, loss=True, compile_loss=False)
    assert resolve_fusion("on", "auto", "ddp", cuda=False) == Fusion(True, True, False)
    assert resolve_fusion("off", "off", "ddp", cuda=False) == Fusion(False, False, False)
    assert resolve_fusion("auto", "auto", "3d", cuda=False) == Fusion(False, False, False)
    for flag in ("--fused_ops", "--fused_loss"):
        with pytest.raises(UserInputError, match=flag):
            resolve_fusion("on" if flag == "--fused_ops" else "auto", "on" if flag == "--fused_loss" else "auto",
                           "3d", cuda=True)


def test_resolve_fusion_liger_choices():
    # no CUDA here: auto never picks liger, asking for it names the flag and why
    assert resolve_fusion("auto", "auto", "zero2", cuda=False) == Fusion(norm=False, loss=True, compile_loss=False)
    for fused_ops_value, fused_loss_value, flag in (("liger", "auto", "--fused_ops"),
                                                    ("auto", "linear", "--fused_loss")):
        with pytest.raises(UserInputError, match=f"{flag}.*needs liger-kernel.*CUDA"):
            resolve_fusion(fused_ops_value, fused_loss_value, "zero2", cuda=False)
        # Gemini's chunked weights and 3d's shardformer are refused whatever the machine
        for plugin in ("gemini", "3d", "ddp"):
            with pytest.raises(UserInputError, match=f"{flag}.*--plugin {plugin}.*zero2, zero2_cpu"):
                resolve_fusion(fused_ops_value, fused_loss_value, plugin, cuda=True)


def _chunked_reference_loss_sum(hidden, weight, targets, ignore_index):
    # the same contract as liger's kernel, in plain torch: the plumbing is what is tested on CPU
    return F.cross_entropy(hidden @ weight.t(), targets, ignore_index=ignore_index, reduction="sum")


def test_linear_loss_forward_matches_logits_path():
    from colossal_llama2.training.kernels.liger import enable_linear_loss

    ids = torch.randint(0, 97, (2, 16), generator=torch.Generator().manual_seed(1))
    labels = ids.clone()
    labels[0, :5] = -100
    targets = shifted_labels(labels)
    reference, patched = _tiny_llama().eval(), _tiny_llama().eval()
    enable_linear_loss(patched, _chunked_reference_loss_sum)
    ref = _reference_loss(reference(input_ids=ids).logits.reshape(-1, 97), targets.reshape(-1))
    loss = patched(input_ids=ids, loss_targets=targets).loss
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    assert ref.item() > 0
    ref.backward()
    loss.backward()
    for (name, a), b in zip(reference.named_parameters(), patched.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-6, msg=name)
    # without loss_targets the patched model is the plain model: logits out, state dict untouched
    torch.testing.assert_close(patched(input_ids=ids).logits, reference(input_ids=ids).logits)
    assert list(patched.state_dict()) == list(reference.state_dict())


@pytest.mark.gpu
def test_liger_linear_loss_matches_reference_on_gpu():
    pytest.importorskip("liger_kernel")
    from colossal_llama2.training.kernels.liger import liger_linear_loss_sum

    torch.manual_seed(0)
    hidden = (torch.randn(300, 64, device="cuda") * 2).to(torch.bfloat16)
    weight = (torch.randn(1000, 64, device="cuda") * 0.2).to(torch.bfloat16)
    targets = torch.randint(0, 1000, (300,), device="cuda")
    targets[::7] = -100
    h1, w1 = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    h2, w2 = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    loss = liger_linear_loss_sum(h1, w1, targets, -100)
    ref = F.cross_entropy((h2.float() @ w2.float().t()), targets, ignore_index=-100, reduction="sum")
    (loss * 0.01).backward()
    (ref * 0.01).backward()
    assert loss.item() == pytest.approx(ref.item(), rel=2e-3)
    torch.testing.assert_close(h1.grad.float(), h2.grad.float(), rtol=2e-2, atol=2e-3)
    torch.testing.assert_close(w1.grad.float(), w2.grad.float(), rtol=2e-2, atol=2e-3)


@pytest.mark.parametrize("family, norms", [("qwen2", 7), ("qwen3", 13), ("mistral", 7)])
def test_fused_norms_cover_qwen2_qwen3_and_mistral(family, norms):
    """The family table gives each model type its RMSNorm class: every norm is fused (2 per decoder layer and the
    final one; Qwen3 also its per-head q and k norms), outputs unchanged in fp32."""
    from transformers import AutoModelForCausalLM, MistralConfig, Qwen2Config, Qwen3Config

    make = {"qwen2": Qwen2Config, "qwen3": Qwen3Config, "mistral": MistralConfig}[family]
    config = make(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                  num_key_value_heads=1, max_position_embeddings=64, attn_implementation="sdpa",
                  tie_word_embeddings=family == "qwen2", sliding_window=None)
    torch.manual_seed(0)
    reference = AutoModelForCausalLM.from_config(config)
    fused = AutoModelForCausalLM.from_config(config)
    fused.load_state_dict(reference.state_dict())
    assert fuse_rms_norms(fused) == norms
    assert all(m.forward.__func__ is fused_ops._norm_forward for m in fused.modules() if "RMSNorm" in type(m).__name__)
    ids = torch.randint(0, 97, (2, 12))
    torch.testing.assert_close(fused(input_ids=ids).logits, reference(input_ids=ids).logits, rtol=1e-5, atol=1e-5)


def test_unknown_model_types_keep_their_modules_or_are_refused(caplog):
    from colossal_llama2.utils.errors import UserInputError

    assert resolve_fusion("auto", "auto", "ddp", cuda=False, model_type="gpt_neox") == Fusion(False, True, False)
    assert "model type 'gpt_neox' is not one of the families" in caplog.text
    with pytest.raises(UserInputError, match="--fused_ops: on: model type 'gpt_neox'"):
        resolve_fusion("on", "auto", "ddp", cuda=False, model_type="gpt_neox")


def test_qwen3_is_a_family_with_fused_kernels(caplog):
    """Qwen3 (model_type qwen3) gets the fused RMSNorm without a warning; Gemma-3's norms (1 + weight) do not."""
    from colossal_llama2.model.families import family_of

    assert family_of("qwen3").rms_norm_type().__name__ == "Qwen3RMSNorm"
    assert resolve_fusion("on", "auto", "ddp", cuda=False, model_type="qwen3").norm
    assert "not one of the families" not in caplog.text
    assert family_of("gemma3_text") is None
