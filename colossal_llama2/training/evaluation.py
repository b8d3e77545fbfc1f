"""Held-out loss per category (--eval_dataset): token-weighted over every label token of the eval set."""
from __future__ import annotations

import math

import torch
from tqdm import tqdm

from ..dataset.loader import PaddingCollator, TokenizedDataset
from .plugins.factory import DataParallel
from .token_loss import TokenLoss


def evaluate(model: torch.nn.Module, token_loss: TokenLoss, eval_data: TokenizedDataset,
             collator: PaddingCollator, dp: DataParallel, device: torch.device, batch_size: int = 1,
             show_progress: bool = False) -> dict[str, float]:
    """{"eval/loss": all categories, "eval/loss/<category>": each} over the whole eval set, on every rank.

    Batches of ``batch_size`` samples of one category (so a batch's loss sum belongs to one category) are dealt
    round-robin over data-parallel ranks; every rank runs the same number of forwards (a rank short of batches at
    the end repeats its first one and does not count it) so the plugins' collectives match.
    """
    batches = category_batches(list(eval_data.dataset["category"]), batch_size)
    categories = sorted({c for c, _ in batches})
    cat_index = {c: i for i, c in enumerate(categories)}
    sums = torch.zeros(len(categories), dtype=torch.float64, device=device)
    counts = torch.zeros(len(categories), dtype=torch.float64, device=device)
    mine = batches[dp.rank::dp.size]
    rounds = math.ceil(len(batches) / dp.size)
    model.eval()
    with torch.no_grad():
        for j in tqdm(range(rounds), desc="eval", disable=not show_progress, leave=False):
            category, indices = mine[j] if j < len(mine) else mine[0] if mine else batches[0]
            loss_sum, n_tokens = token_loss(collator([eval_data.dataset[i] for i in indices]))
            if j < len(mine):
                sums[cat_index[category]] += loss_sum.double()
                counts[cat_index[category]] += n_tokens.double()
    model.train()
    dp.all_reduce(sums), dp.all_reduce(counts)
    values = {f"eval/loss/{c}": (sums[i] / counts[i]).item() for i, c in enumerate(categories) if counts[i] > 0}
    values["eval/loss"] = (sums.sum() / counts.sum().clamp(min=1)).item()
    return values


def category_batches(categories: list[str], batch_size: int) -> list[tuple[str, list[int]]]:
    """(category, sample indices) batches: each category's samples in order, ``batch_size`` at a time."""
    by_category: dict[str, list[int]] = {}
    for index, category in enumerate(categories):
        by_category.setdefault(category, []).append(index)
    return [(category, indices[k:k + batch_size]) for category, indices in sorted(by_category.items())
            for k in range(0, len(indices), batch_size)]
