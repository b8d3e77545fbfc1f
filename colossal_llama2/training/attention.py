"""Attention backend choice and packed-document masking.

Packed samples hold several documents (``seq_lengths`` from data preparation). To stop a document from
attending to the one before it:

* sdpa / eager (Hugging Face LlamaModel): a 4-D additive block-diagonal causal mask [b, 1, q, k] is
  passed as ``attention_mask``; HF uses a 4-D mask as given. Padding tokens attend only to padding.
* flash_attention_2: ``attention_mask=None`` plus per-document ``position_ids``; transformers then
  runs flash-attn's varlen kernel with one sequence per document (the batch is flattened).
* colossal_varlen (CUDA default, see varlen_attention.py): torch's varlen flash kernel over per-document
  offsets; no mask tensor at all. colossal_varlen_cudnn (the default on compute capability 9.0+): the same,
  but batches of whole unpadded samples go through SDPA's cuDNN kernel (1.8x flash on an H200).
* the 3d plugin (shardformer, tensor parallel): its LlamaModel forward passes a 4-D mask on as given and
  keeps transformers' SDPA attention (flash attention and sequence parallelism are not enabled), so the
  block-diagonal mask isolates documents there too (tested with tp 1 and tp 2 on GPUs).
A batch whose samples hold one document each gets the plain 2-D padding mask (cheaper, same result).
"""
from __future__ import annotations

import importlib.util

import torch

from ..utils.logging import get_logger

logger = get_logger(__name__)


def choose_attn_implementation(use_flash_attn: bool, cuda: bool, attention: str = "auto",
                               plugin: str | None = None) -> str:
    """The transformers attention implementation to build the model with.

    auto: flash-attn 2 with --use_flash_attn when importable; otherwise, on CUDA, torch's varlen flash
    kernel (packed documents isolated at flash speed), with whole samples through cuDNN on Hopper and later
    (``cudnn``); otherwise SDPA. The 3d plugin's shardformer replaces attention itself, so it always gets SDPA.
    """
    from .kernels import varlen_attention

    if attention == "flash_attn" or (attention == "auto" and use_flash_attn):
        if cuda and importlib.util.find_spec("flash_attn") is not None:
            return "flash_attention_2"
        logger.warning("flash-attn is not importable%s; using %s", "" if cuda else " (no CUDA)",
                       "torch's varlen flash kernel" if cuda and plugin != "3d" else "torch SDPA")
        attention = "auto"
    if attention in ("varlen", "cudnn") or (attention == "auto" and cuda and plugin != "3d"):
        if plugin == "3d":
            logger.warning("--attention %s does not apply to the 3d plugin (shardformer owns attention); using SDPA",
                           attention)
            return "sdpa"
        if varlen_attention.varlen_available(cuda):
            cudnn = attention == "cudnn" or (attention == "auto" and varlen_attention.cudnn_preferred(cuda))
            return varlen_attention.register(cudnn_whole_samples=cudnn)
        logger.warning("torch.nn.attention.varlen is not available in this torch; using SDPA")
    return "sdpa"


def block_causal_mask(document_ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[b, L] document index per token (-1 = padding) -> additive mask [b, 1, L, L] (0 = attend)."""
    length = document_ids.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=document_ids.device).tril()
    same_doc = document_ids[:, :, None] == document_ids[:, None, :]
    allowed = same_doc & causal
    mask = torch.zeros(allowed.shape, dtype=dtype, device=document_ids.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


def model_inputs(batch: dict, *, attn_implementation: str, isolate_documents: bool, mask_dtype: torch.dtype) -> dict:
    """The keyword arguments for the model's forward from a collated batch."""
    from .kernels.varlen_attention import ATTN_NAMES, cu_seq_lens_from_document_ids

    # No KV cache in training: with one, every decoder layer's forward reads its own layer index (the cache
    # update), so torch.compile (--compile) compiles each layer separately and, past its recompile limit of 8,
    # leaves the deeper layers in eager mode. Without it all layers share one compiled graph.
    inputs = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"], "use_cache": False}
    packed = isolate_documents and bool((batch["document_ids"] > 0).any())
    if attn_implementation in ATTN_NAMES:
        # Every document and every padding run is its own causal segment: with or without packing.
        cu, longest = cu_seq_lens_from_document_ids(batch["document_ids"] if isolate_documents
                                                    else (batch["attention_mask"] - 1))
        inputs.update(attention_mask=None, cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=longest,
                      max_length_k=longest)
    elif attn_implementation == "flash_attention_2" and isolate_documents:
        inputs["attention_mask"] = None  # varlen from position ids (padding rides with the last document)
    elif packed:
        inputs["attention_mask"] = block_causal_mask(batch["document_ids"], mask_dtype)
    else:
        inputs["attention_mask"] = batch["attention_mask"]
    return inputs
