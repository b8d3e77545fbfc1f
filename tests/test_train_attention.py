"""Packed documents do not attend to each other: a packed sample gives each document's own logits."""
from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from colossal_llama2.dataset.loader import PaddingCollator
from colossal_llama2.training.attention import block_causal_mask, model_inputs
from colossal_llama2.training import varlen_attention
from colossal_llama2.training.neftune import NEFTune


def logits_of(model, batch, isolate=True):
    with torch.no_grad():
        return model(**model_inputs(batch, attn_implementation=model.config._attn_implementation,
                                    isolate_documents=isolate, mask_dtype=torch.float32)).logits


@pytest.mark.parametrize("attn", ["sdpa", "eager", "varlen"])
def test_packed_documents_are_isolated(tiny_model_dir, attn):
    if attn == "varlen":  # the CUDA default; on CPU the same path runs with its per-segment reference kernel
        attn = varlen_attention.register()
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
