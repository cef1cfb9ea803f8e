"""Reproducible stratified splits (scikit-learn's ``train_test_split`` with ``stratify``)."""

from __future__ import annotations

from typing import Annotated

import numpy as np
import torch
from pydantic import Field

MAX_SPLIT_SEED = 2**32 - 1
"""The largest split seed: scikit-learn takes a ``random_state`` up to 2**32 - 1."""
SplitSeed = Annotated[int, Field(ge=0, le=MAX_SPLIT_SEED)]
"""A dataset option's split seed, bounded to what ``stratified_split`` accepts."""


def stratified_split(
    labels: torch.Tensor, val_fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Splits sample indices so that every class keeps its share in both parts.

    Every class with at least two samples gives at least one to each part; a class with
    a single sample keeps it in training.

    Args:
        labels: int64 class labels, shape ``(N,)``.
        val_fraction: Share that goes to validation, in (0, 1).
        seed: Seed of the shuffle; the same seed gives the same split.

    Returns:
        ``(train_indices, val_indices)``, each sorted, int64.
    """
    y = labels.cpu().numpy()
    values, counts = np.unique(y, return_counts=True)
    splittable = np.isin(y, values[counts >= 2])
    candidates = np.flatnonzero(splittable)
    n_classes = int((counts >= 2).sum())
    n = len(candidates)
    if n_classes == 0:
        return torch.arange(len(y), dtype=torch.int64), torch.zeros(0, dtype=torch.int64)
    # Imported here: scikit-learn costs about a second at start-up, and most datasets (an
    # image folder with its own val/ split) never split.
    from sklearn.model_selection import train_test_split

    # sklearn wants at least one sample per class on each side: clamp the count to that.
    n_val = min(max(round(n * val_fraction), n_classes), n - n_classes)
    train_part, val_part = train_test_split(
        candidates, test_size=n_val, random_state=seed, stratify=y[candidates]
    )
    train_part, val_part = _one_on_each_side(y, train_part, val_part, seed)
    train_idx = np.concatenate([train_part, np.flatnonzero(~splittable)])
    return (
        torch.from_numpy(np.sort(train_idx)).to(torch.int64),
        torch.from_numpy(np.sort(val_part)).to(torch.int64),
    )


def _one_on_each_side(
    y: np.ndarray, train_part: np.ndarray, val_part: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Moves one sample across for any class that sklearn's rounding left on one side only."""
    rng = np.random.default_rng(seed)
    for cls in np.unique(y[np.concatenate([train_part, val_part])]):
        in_train = train_part[y[train_part] == cls]
        in_val = val_part[y[val_part] == cls]
        if len(in_val) == 0:
            moved = rng.choice(in_train)
            train_part, val_part = train_part[train_part != moved], np.append(val_part, moved)
        elif len(in_train) == 0:
            moved = rng.choice(in_val)
            val_part, train_part = val_part[val_part != moved], np.append(train_part, moved)
    return train_part, val_part
