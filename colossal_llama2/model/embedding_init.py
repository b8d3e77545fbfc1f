"""Values for the rows of a grown embedding / lm_head matrix.

All arithmetic is in float32 over chunks of rows, whatever the matrix dtype, so a bf16 7B model never
needs an fp32 copy of a whole matrix (and the result does not depend on bf16 summation order).
"""
from __future__ import annotations

from typing import Sequence

import torch

CHUNK_ROWS = 4096


@torch.no_grad()
def mean_row(weight: torch.Tensor, num_rows: int) -> torch.Tensor:
    """Mean of ``weight[:num_rows]`` in float32 (shape ``[hidden]``)."""
    total = torch.zeros(weight.shape[1], dtype=torch.float32)
    for start in range(0, num_rows, CHUNK_ROWS):
        total += weight[start : min(start + CHUNK_ROWS, num_rows)].float().sum(dim=0)
    return total / num_rows


@torch.no_grad()
def subword_mean_rows(weight: torch.Tensor, pieces_ids: Sequence[Sequence[int]]) -> torch.Tensor:
    """Row ``i`` = mean of ``weight[pieces_ids[i]]`` in float32 (shape ``[len(pieces_ids), hidden]``)."""
    out = torch.empty(len(pieces_ids), weight.shape[1], dtype=torch.float32)
    for start in range(0, len(pieces_ids), CHUNK_ROWS):
        chunk = pieces_ids[start : start + CHUNK_ROWS]
        flat = torch.tensor([i for ids in chunk for i in ids], dtype=torch.long)
        segment = torch.tensor([k for k, ids in enumerate(chunk) for _ in ids], dtype=torch.long)
        counts = torch.tensor([len(ids) for ids in chunk], dtype=torch.float32)
        sums = torch.zeros(len(chunk), weight.shape[1], dtype=torch.float32)
        sums.index_add_(0, segment, weight.index_select(0, flat).float())
        out[start : start + len(chunk)] = sums / counts[:, None]
    return out


@torch.no_grad()
def fill_new_rows(weight: torch.Tensor, old_rows: int, new_rows: torch.Tensor | None, pad_value: torch.Tensor) -> None:
    """In place: rows ``[old_rows, old_rows+len(new_rows))`` <- ``new_rows``; every later row <- ``pad_value``.

    ``new_rows`` None means every row from ``old_rows`` on gets ``pad_value`` (the plain mean method).
    Rows below ``old_rows`` are not touched.
    """
    start = old_rows
    if new_rows is not None and len(new_rows):
        weight[start : start + len(new_rows)] = new_rows.to(weight.dtype)
        start += len(new_rows)
    if start < weight.shape[0]:
        weight[start:] = pad_value.to(weight.dtype)
