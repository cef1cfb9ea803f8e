"""Reproducible dataset splits."""

from __future__ import annotations

import torch


def stratified_split(
    labels: torch.Tensor, val_fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Splits sample indices so that every class keeps its share in both parts.

    Args:
        labels: int64 class labels, shape ``(N,)``.
        val_fraction: Share of each class that goes to validation, in (0, 1).
        seed: Seed of the shuffle; the same seed gives the same split.

    Returns:
        ``(train_indices, val_indices)``, each sorted.
    """
    generator = torch.Generator().manual_seed(seed)
    train_parts, val_parts = [], []
    for cls in torch.unique(labels):
        members = torch.nonzero(labels == cls).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        n_val = round(len(members) * val_fraction)
        n_val = min(max(n_val, 1), len(members) - 1) if len(members) > 1 else 0
        val_parts.append(members[:n_val])
        train_parts.append(members[n_val:])
    return torch.sort(torch.cat(train_parts)).values, torch.sort(torch.cat(val_parts)).values
