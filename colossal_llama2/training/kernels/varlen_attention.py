"""Packed-document attention at flash speed: torch's ``varlen_attn`` behind a transformers attention name.

Packed samples hold several documents. A 4-D block-diagonal mask keeps them apart but moves SDPA off its
flash kernel (and costs a [b, 1, L, L] tensor). ``torch.nn.attention.varlen.varlen_attn`` (flash
attention over cumulative sequence offsets, in torch itself: no flash-attn build needed) attends within
each document only and skips the blocks between documents entirely.

The batch is flattened to one token stream; ``cu_seq_lens`` marks where each document (and each run of
padding, which becomes a segment of its own whose outputs carry no loss) starts. The model receives
them as keyword arguments, which transformers passes down to every attention call.

On CPU (tests) the same path runs with a reference kernel: causal SDPA per segment.

``colossal_varlen_cudnn`` (``--attention cudnn``, the default on GPUs of compute capability 9.0+) is the same,
except that a batch whose samples are each one whole segment (no packing, no padding: long documents) goes
through SDPA's cuDNN kernel, which on one H200 at 7b's attention shape (32 heads of 128, 4,096 tokens) runs
forward + backward in 1.08 ms against 1.94 ms for torch's flash kernel and 2.00 ms for varlen flash
(``benchmarks/attention_benchmark.py``). Packed or padded batches stay on varlen flash.
"""
from __future__ import annotations

import functools
import inspect

import torch
import torch.nn.functional as F

ATTN_NAME = "colossal_varlen"
CUDNN_ATTN_NAME = "colossal_varlen_cudnn"
ATTN_NAMES = (ATTN_NAME, CUDNN_ATTN_NAME)


def cu_seq_lens_from_document_ids(document_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    """[b, L] document index per token (-1 = padding) -> (int32 offsets of every segment, longest segment).

    A new segment starts at each sample's first token and wherever the document index changes.
    """
    b, length = document_ids.shape
    starts = torch.ones_like(document_ids, dtype=torch.bool)
    starts[:, 1:] = document_ids[:, 1:] != document_ids[:, :-1]
    flat_starts = starts.reshape(-1).nonzero().squeeze(1)
    cu = torch.cat([flat_starts, flat_starts.new_tensor([b * length])]).to(torch.int32)
    max_len = int((cu[1:] - cu[:-1]).max())
    return cu, max_len


def _reference_varlen(q, k, v, cu, scale, enable_gqa):
    out = torch.empty_like(q)
    bounds = cu.tolist()
    for s, e in zip(bounds[:-1], bounds[1:]):
        out[s:e] = F.scaled_dot_product_attention(q[s:e].transpose(0, 1), k[s:e].transpose(0, 1),
                                                  v[s:e].transpose(0, 1), is_causal=True, scale=scale,
                                                  enable_gqa=enable_gqa).transpose(0, 1)
    return out


@functools.lru_cache(maxsize=None)
def _supports_gqa(fn) -> bool:
    return "enable_gqa" in inspect.signature(fn).parameters


def whole_sample_attention(query, key, value, scaling):
    """Causal attention over [b, h, L, d] through SDPA, cuDNN's kernel first (flash, then memory-efficient,
    where cuDNN does not take the input) -> [b, L, hq, d]."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backends = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]
    with sdpa_kernel(backends, set_priority=True):
        out = F.scaled_dot_product_attention(query, key, value, is_causal=True, scale=scaling,
                                             enable_gqa=query.shape[1] != key.shape[1])
    return out.transpose(1, 2).contiguous()


def varlen_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                             cu_seq_lens_q=None, max_length_q=None, cudnn_whole_samples=False, **kwargs):
    """transformers attention interface: query [b, hq, L, d], key/value [b, hkv, L, d] -> ([b, L, hq, d], None)."""
    b, hq, length, d = query.shape
    if (cudnn_whole_samples and cu_seq_lens_q is not None
            and cu_seq_lens_q.shape[0] == b + 1 and max_length_q == length):
        # b segments over b * L tokens, none longer than L: every sample is exactly one segment
        return whole_sample_attention(query, key, value, scaling), None
    if cu_seq_lens_q is None:  # generation / evaluation without offsets: plain SDPA
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      **kwargs)
    hkv = key.shape[1]
    q = query.transpose(1, 2).reshape(b * length, hq, d)
    k = key.transpose(1, 2).reshape(b * length, hkv, d)
    v = value.transpose(1, 2).reshape(b * length, hkv, d)
    if q.is_cuda:
        from torch.nn.attention.varlen import varlen_attn

        if torch.is_autocast_enabled("cuda"):
            # ddp's bf16 autocast: rotary's fp32 cos/sin upcast q and k, and varlen_attn is not on autocast's
            # op list (SDPA is), so cast as autocast would; flash kernels take only fp16/bf16.
            dtype = torch.get_autocast_dtype("cuda")
            q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)

        gqa = {}
        if hq != hkv:
            if _supports_gqa(varlen_attn):
                gqa["enable_gqa"] = True
            else:  # older torch (2.11): share key/value heads by repeating them
                k, v = k.repeat_interleave(hq // hkv, dim=1), v.repeat_interleave(hq // hkv, dim=1)
        out = varlen_attn(q, k, v, cu_seq_lens_q, cu_seq_lens_q, max_length_q, max_length_q, scale=scaling,
                          window_size=(-1, 0), **gqa)
    else:
        out = _reference_varlen(q, k, v, cu_seq_lens_q, scaling, hq != hkv)
    return out.reshape(b, length, hq, d), None


def varlen_available(cuda: bool) -> bool:
    if not cuda:
        return True  # the reference kernel
    try:
        from torch.nn.attention.varlen import varlen_attn  # noqa: F401
    except ImportError:
        return False
    return True


def cudnn_preferred(cuda: bool) -> bool:
    """Whether --attention auto takes the cuDNN kernel for whole samples: Hopper and later, where it was measured
    faster, with torch's cuDNN attention switched on."""
    return (cuda and torch.cuda.is_available() and torch.cuda.get_device_capability() >= (9, 0)
            and torch.backends.cuda.cudnn_sdp_enabled())


def register(cudnn_whole_samples: bool = False) -> str:
    """Register the attention function with transformers; returns its name for ``attn_implementation``."""
    from transformers import AttentionInterface

    if cudnn_whole_samples:
        AttentionInterface.register(CUDNN_ATTN_NAME, functools.partial(varlen_attention_forward,
                                                                       cudnn_whole_samples=True))
        return CUDNN_ATTN_NAME
    AttentionInterface.register(ATTN_NAME, varlen_attention_forward)
    return ATTN_NAME
