"""Packed documents do not attend to each other: a packed sample gives each document's own logits."""
from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from colossal_llama2.dataset.loader import PaddingCollator
from colossal_llama2.training.attention import block_causal_mask, model_inputs
from colossal_llama2.training.kernels import varlen_attention
from colossal_llama2.training.neftune import NEFTune


def logits_of(model, batch, isolate=True):
    with torch.no_grad():
        return model(**model_inputs(batch, attn_implementation=model.config._attn_implementation,
                                    isolate_documents=isolate, mask_dtype=torch.float32)).logits


@pytest.mark.parametrize("attn", ["sdpa", "eager", "varlen", "cudnn"])
def test_packed_documents_are_isolated(tiny_model_dir, attn):
    if attn in ("varlen", "cudnn"):  # the CUDA defaults; on CPU with varlen's per-segment reference kernel
        attn = varlen_attention.register(cudnn_whole_samples=attn == "cudnn")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation=attn).eval()
    g = torch.Generator().manual_seed(0)
    doc_a = [1] + torch.randint(3, 600, (9,), generator=g).tolist()
    doc_b = [1] + torch.randint(3, 600, (11,), generator=g).tolist()
    collate = PaddingCollator(pad_token_id=2, max_length=32, padding_mode="max_length")
    sample = lambda ids, lens: {"input_ids": ids, "labels": ids, "seq_lengths": lens}  # noqa: E731
    packed = collate([sample(doc_a + doc_b, [10, 12]), sample(doc_b, [12])])  # 2nd row: padding too
    alone_a = logits_of(model, collate([sample(doc_a, [10])]))
    alone_b = logits_of(model, collate([sample(doc_b, [12])]))
    got = logits_of(model, packed)
    torch.testing.assert_close(got[0, :10], alone_a[0, :10], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[0, 10:22], alone_b[0, :12], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[1, :12], alone_b[0, :12], atol=1e-5, rtol=1e-5)
    assert torch.isfinite(got).all(), "padding rows must not produce NaN"
    # The check can fail: with a plain causal mask document b sees document a and its logits change.
    leaky = logits_of(model, packed, isolate=False)
    assert (leaky[0, 10:22] - alone_b[0, :12]).abs().max() > 1e-3


def test_whole_samples_take_the_cudnn_route_and_match_sdpa(tiny_model_dir, monkeypatch):
    """--attention cudnn: unpacked, unpadded samples go through whole_sample_attention (SDPA, cuDNN first on a
    GPU), same logits as plain SDPA; a packed batch does not."""
    calls = []
    real = varlen_attention.whole_sample_attention
    monkeypatch.setattr(varlen_attention, "whole_sample_attention", lambda *a: calls.append(1) or real(*a))
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation=varlen_attention.register(
        cudnn_whole_samples=True)).eval()
    reference = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa").eval()
    g = torch.Generator().manual_seed(1)
    docs = [[1] + torch.randint(3, 600, (15,), generator=g).tolist() for _ in range(2)]
    collate = PaddingCollator(pad_token_id=2, max_length=16, padding_mode="max_length")
    whole = collate([{"input_ids": d, "labels": d, "seq_lengths": [16]} for d in docs])
    torch.testing.assert_close(logits_of(model, whole), logits_of(reference, whole), atol=1e-5, rtol=1e-5)
    assert len(calls) == model.config.num_hidden_layers
    packed = collate([{"input_ids": d, "labels": d, "seq_lengths": [6, 10]} for d in docs])
    logits_of(model, packed)
    assert len(calls) == model.config.num_hidden_layers, "a packed batch must stay on the varlen kernel"


@pytest.mark.gpu
def test_cudnn_whole_sample_attention_matches_flash_on_gpu():
    """On the GPU: the cuDNN route gives flash's output and gradients (bf16, 7b's head size, 1,024 tokens)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(2, 8, 1024, 128, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_()
               for _ in range(3))
    grad_out = torch.randn(2, 1024, 8, 128, device="cuda", dtype=torch.bfloat16, generator=g)
    results = []
    for fn in (lambda: varlen_attention.whole_sample_attention(q, k, v, None),
               lambda: _flash(q, k, v, sdpa_kernel, SDPBackend)):
        q.grad = k.grad = v.grad = None
        out = fn()
        out.backward(grad_out)
        results.append([out.detach(), q.grad.clone(), k.grad.clone(), v.grad.clone()])
    for got, want in zip(*results):
        torch.testing.assert_close(got.float(), want.float(), atol=2e-2, rtol=2e-2)


def _flash(q, k, v, sdpa_kernel, backend):
    with sdpa_kernel(backend.FLASH_ATTENTION):
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2)


def test_varlen_segments_cover_documents_and_padding():
    ids = torch.tensor([[0, 0, 0, 1, 1, -1], [0, 0, 0, 0, -1, -1]])
    cu, longest = varlen_attention.cu_seq_lens_from_document_ids(ids)
    assert cu.dtype == torch.int32 and cu.tolist() == [0, 3, 5, 6, 10, 12] and longest == 4


def test_block_causal_mask_shape_and_values():
    mask = block_causal_mask(torch.tensor([[0, 0, 1, -1]]), torch.float32)
    allowed = (mask[0, 0] == 0).int().tolist()
    assert allowed == [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]


def test_neftune_noise_only_in_training_and_scaled_by_real_length():
    emb = torch.nn.Embedding(10, 16)
    neft = NEFTune(emb, alpha=5.0)
    ids = torch.tensor([[1, 2, 3, 4], [1, 2, 0, 0]])
    neft.set_lengths(torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]]))
    clean = torch.nn.functional.embedding(ids, emb.weight)
    emb.eval()
    assert torch.equal(emb(ids), clean)
    emb.train()
    noise = (emb(ids) - clean).detach()
    bound = torch.tensor([5 / (4 * 16) ** 0.5, 5 / (2 * 16) ** 0.5])
    assert (noise.abs().amax(dim=(1, 2)) <= bound + 1e-6).all()
    assert (noise.abs().amax(dim=(1, 2)) > 0.5 * bound).all()
    neft.remove()
    assert torch.equal(emb(ids), clean)


@pytest.mark.parametrize("attention, plugin, expected", [
    ("cudnn", "zero2", varlen_attention.CUDNN_ATTN_NAME), ("varlen", "zero2", varlen_attention.ATTN_NAME),
    ("auto", "zero2", "sdpa"), ("cudnn", "3d", "sdpa"), ("sdpa", "zero2", "sdpa")])
def test_attention_choice_on_cpu(attention, plugin, expected):
    """--attention on a machine without CUDA: an explicit cudnn/varlen choice registers that function (its
    reference kernel runs on CPU), auto stays on SDPA, and 3d (shardformer owns attention) always gets SDPA."""
    from colossal_llama2.training.attention import choose_attn_implementation

    assert choose_attn_implementation(False, False, attention, plugin) == expected
    assert not varlen_attention.cudnn_preferred(False)
