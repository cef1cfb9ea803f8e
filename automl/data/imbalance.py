"""Building blocks of the imbalance strategies: resampling indices and class weights.

Pure functions of the training labels (or their class counts). They run on whatever
device the labels are on, so resampling an epoch costs a few tensor operations.
"""

from __future__ import annotations

import torch


def class_counts(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Samples per class, int64 ``(num_classes,)``."""
    return torch.bincount(labels, minlength=num_classes)


def oversample_indices(
    labels: torch.Tensor, num_classes: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """One epoch of class-balanced oversampling, as a shuffled index tensor.

    Every sample appears at least once; each smaller class is topped up with samples
    drawn with replacement until it matches the largest class. Call once per epoch for
    fresh duplicates.

    Args:
        labels: int64 training labels ``(N,)``.
        num_classes: Number of classes.
        generator: Random generator on ``labels.device`` (for reproducible epochs).

    Returns:
        int64 indices into ``labels``, ``num_present_classes * max_count`` long.
    """
    counts = class_counts(labels, num_classes)
    target = int(counts.max())
    parts = []
    for cls in torch.nonzero(counts).flatten().tolist():
        members = torch.nonzero(labels == cls).flatten()
        extra = target - len(members)
        if extra:
            draw = torch.randint(len(members), (extra,), generator=generator, device=labels.device)
            members = torch.cat([members, members[draw]])
        parts.append(members)
    return _shuffle(torch.cat(parts), generator)


def undersample_indices(
    labels: torch.Tensor, num_classes: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """One epoch of random undersampling, as a shuffled index tensor.

    Every present class keeps as many samples as the smallest present class, drawn
    without replacement; call once per epoch so that all samples get their turn.

    Returns:
        int64 indices into ``labels``, ``num_present_classes * min_count`` long.
    """
    counts = class_counts(labels, num_classes)
    target = int(counts[counts > 0].min())
    parts = []
    for cls in torch.nonzero(counts).flatten().tolist():
        members = torch.nonzero(labels == cls).flatten()
        parts.append(_shuffle(members, generator)[:target])
    return _shuffle(torch.cat(parts), generator)


def inverse_frequency_weights(counts: torch.Tensor) -> torch.Tensor:
    """Class weights ``N / (K * n_c)`` (scikit-learn's "balanced"): mean 1 over the samples.

    (The loss divides by the batch's summed weights, so only the ratios between classes
    matter, whatever the scale.)

    Args:
        counts: Samples per class ``(num_classes,)``.

    Returns:
        float32 weights ``(num_classes,)``; 0 for classes without samples.
    """
    counts = counts.to(torch.float64)
    present = counts > 0
    weights = torch.zeros_like(counts)
    weights[present] = counts.sum() / (int(present.sum()) * counts[present])
    return weights.float()


def effective_number_weights(counts: torch.Tensor, beta: float = 0.999) -> torch.Tensor:
    """Class-balanced weights by the effective number of samples (Cui et al., CVPR 2019).

    ``w_c = (1 - beta) / (1 - beta ** n_c)``, normalized to sum to the number of present
    classes. ``beta = 0`` weighs classes equally; ``beta -> 1`` approaches inverse frequency.

    Args:
        counts: Samples per class ``(num_classes,)``.
        beta: In ``[0, 1)``.

    Returns:
        float32 weights ``(num_classes,)``; 0 for classes without samples.

    Raises:
        ValueError: If ``beta`` is outside ``[0, 1)``.
    """
    if not 0 <= beta < 1:
        raise ValueError(f"beta must be in [0, 1), got {beta}")
    counts = counts.to(torch.float64)
    present = counts > 0
    weights = torch.zeros_like(counts)
    effective = (1.0 - torch.pow(torch.tensor(beta, dtype=torch.float64), counts[present])) / (
        1.0 - beta
    )
    weights[present] = 1.0 / effective
    weights = weights * int(present.sum()) / weights.sum()
    return weights.float()


def focal_alpha(counts: torch.Tensor) -> torch.Tensor:
    """Per-class focal-loss alpha: inverse class frequency normalized to sum to 1.

    Rare classes get a larger alpha. Multiply the focal term of a sample of class ``c``
    by ``alpha[c]`` (Lin et al., 2017, with one alpha per class).

    Returns:
        float32 ``(num_classes,)`` summing to 1; 0 for classes without samples.
    """
    weights = inverse_frequency_weights(counts).double()
    return (weights / weights.sum()).float()


def gan_topup_counts(counts: torch.Tensor, target_ratio: float) -> torch.Tensor:
    """Synthetic samples per class that lift every class to ``target_ratio`` of the largest.

    Args:
        counts: Real samples per class ``(num_classes,)``.
        target_ratio: In ``(0, 1]``; 1 tops every class up to the largest class's count.

    Returns:
        int64 ``(num_classes,)``: how many images to synthesize per class (0 for classes
        already at the target, and for classes without real samples, which a
        class-conditional generator never learned).

    Raises:
        ValueError: If ``target_ratio`` is outside ``(0, 1]``.
    """
    if not 0 < target_ratio <= 1:
        raise ValueError(f"target_ratio must be in (0, 1], got {target_ratio}")
    target = round(float(counts.max()) * target_ratio)
    missing = (target - counts).clamp_min(0)
    return torch.where(counts > 0, missing, torch.zeros_like(missing)).to(torch.int64)


def _shuffle(indices: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    order = torch.randperm(len(indices), generator=generator, device=indices.device)
    return indices[order]
