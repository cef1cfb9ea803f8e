"""Losses computed by hand agree with PyTorch's own."""

from __future__ import annotations

import pytest
import torch

from automl.train.losses import WeightedCrossEntropy


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_weighted_cross_entropy_equals_pytorchs(label_smoothing: float) -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(32, 5, generator=generator)
    targets = torch.randint(0, 5, (32,), generator=generator)
    weight = torch.rand(5, generator=generator) + 0.2
    expected = torch.nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)
    ours = WeightedCrossEntropy(weight, label_smoothing)
    assert torch.allclose(ours(logits, targets), expected(logits, targets), atol=1e-6)


def test_weighted_cross_entropy_takes_soft_targets_as_pytorchs_does() -> None:
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(16, 4, generator=generator)
    soft = torch.softmax(torch.randn(16, 4, generator=generator), dim=1)
    weight = torch.rand(4, generator=generator) + 0.2
    expected = torch.nn.CrossEntropyLoss(weight=weight, label_smoothing=0.1)(logits, soft)
    assert torch.allclose(WeightedCrossEntropy(weight, 0.1)(logits, soft), expected, atol=1e-6)
