"""Held-out loss per category (--eval_dataset): token-weighted over every label token of the eval set."""
from __future__ import annotations

import math

import torch

from ..dataset.loader import PaddingCollator, TokenizedDataset
from .plugins.factory import DataParallel
from .token_loss import TokenLoss


def evaluate(model: torch.nn.Module, token_loss: TokenLoss, eval_data: TokenizedDataset,
             collator: PaddingCollator, dp: DataParallel, device: torch.device) -> dict[str, float]:
    """{"eval/loss": all categories, "eval/loss/<category>": each} over the whole eval set, on every rank.

    Samples are dealt round-robin over data-parallel ranks, one per forward; every rank runs the same number
    of forwards (the last ones repeat a sample and are not counted) so the plugins' collectives match.
    """
    categories = sorted(set(eval_data.dataset["category"]))
    cat_index = {c: i for i, c in enumerate(categories)}
    sums = torch.zeros(len(categories), dtype=torch.float64, device=device)
    counts = torch.zeros(len(categories), dtype=torch.float64, device=device)
    n = len(eval_data)
    model.eval()
    with torch.no_grad():
        for j in range(math.ceil(n / dp.size)):
            index = j * dp.size + dp.rank
            sample = eval_data.dataset[index % n]
            loss_sum, n_tokens = token_loss(collator([sample]))
            if index < n:
                c = cat_index[sample["category"]]
                sums[c] += loss_sum.double()
                counts[c] += n_tokens.double()
    model.train()
    dp.all_reduce(sums), dp.all_reduce(counts)
    values = {f"eval/loss/{c}": (sums[i] / counts[i]).item() for i, c in enumerate(categories) if counts[i] > 0}
    values["eval/loss"] = (sums.sum() / counts.sum().clamp(min=1)).item()
    return values
