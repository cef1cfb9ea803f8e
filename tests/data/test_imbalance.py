"""Resampling indices and class weights for imbalanced data."""

from __future__ import annotations

import pytest
import torch

from automl.data.imbalance import (
    class_counts,
    effective_number_weights,
    focal_alpha,
    gan_topup_counts,
    inverse_frequency_weights,
    oversample_indices,
    undersample_indices,
)

LABELS = torch.cat([torch.full((n,), c, dtype=torch.int64) for c, n in enumerate([40, 10, 2, 0])])


def test_class_counts() -> None:
    assert class_counts(LABELS, 4).tolist() == [40, 10, 2, 0]


def test_oversampling_balances_and_keeps_every_sample() -> None:
    generator = torch.Generator().manual_seed(0)
    indices = oversample_indices(LABELS, 4, generator)
    assert class_counts(LABELS[indices], 4).tolist() == [40, 40, 40, 0]
    assert set(indices.tolist()) == set(range(len(LABELS)))
    again = oversample_indices(LABELS, 4, torch.Generator().manual_seed(0))
    assert torch.equal(indices, again)
    assert not torch.equal(indices, oversample_indices(LABELS, 4, generator))  # new epoch


def test_undersampling_cuts_to_the_smallest_present_class() -> None:
    generator = torch.Generator().manual_seed(0)
    first = undersample_indices(LABELS, 4, generator)
    second = undersample_indices(LABELS, 4, generator)
    assert class_counts(LABELS[first], 4).tolist() == [2, 2, 2, 0]
    assert len(set(first.tolist())) == 6
    assert set(first.tolist()) != set(second.tolist())  # another subset next epoch


def test_inverse_frequency_weights() -> None:
    weights = inverse_frequency_weights(class_counts(LABELS, 4))
    assert weights.tolist() == pytest.approx([52 / 120, 52 / 30, 52 / 6, 0.0])
    assert float(weights[:3].mean()) == pytest.approx(sum([52 / 120, 52 / 30, 52 / 6]) / 3)
    assert inverse_frequency_weights(torch.tensor([5, 5])).tolist() == [1.0, 1.0]


def test_effective_number_weights() -> None:
    counts = torch.tensor([1000, 100, 10, 0])
    weights = effective_number_weights(counts, beta=0.99)
    effective = [(1 - 0.99**n) / 0.01 for n in (1000, 100, 10)]
    raw = [1 / e for e in effective]
    expected = [w * 3 / sum(raw) for w in raw] + [0.0]
    assert weights.tolist() == pytest.approx(expected, rel=1e-5)
    assert float(weights.sum()) == pytest.approx(3.0)
    assert effective_number_weights(counts, beta=0.0)[:3].tolist() == pytest.approx([1, 1, 1])
    ratio = effective_number_weights(counts, beta=0.999999)
    assert float(ratio[2] / ratio[1]) == pytest.approx(10.0, rel=1e-3)  # -> inverse frequency
    with pytest.raises(ValueError, match="beta"):
        effective_number_weights(counts, beta=1.0)


def test_focal_alpha_favours_rare_classes_and_sums_to_one() -> None:
    alpha = focal_alpha(torch.tensor([30, 10, 0]))
    assert float(alpha.sum()) == pytest.approx(1.0)
    assert alpha.tolist() == pytest.approx([0.25, 0.75, 0.0])


def test_gan_topup_counts() -> None:
    counts = torch.tensor([100, 30, 0, 80])
    assert gan_topup_counts(counts, 1.0).tolist() == [0, 70, 0, 20]
    assert gan_topup_counts(counts, 0.5).tolist() == [0, 20, 0, 0]
    with pytest.raises(ValueError, match="target_ratio"):
        gan_topup_counts(counts, 0.0)
