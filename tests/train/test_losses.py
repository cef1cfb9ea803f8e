"""Losses computed by hand agree with PyTorch's own."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from automl.train.losses import FocalLoss, WeightedCrossEntropy


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


def test_weighted_cross_entropy_of_bf16_logits_is_computed_in_fp32() -> None:
    """As PyTorch's own loss is under autocast: CPU autocast would keep bf16 otherwise."""
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(32, 5, generator=generator).to(torch.bfloat16)
    targets = torch.randint(0, 5, (32,), generator=generator)
    weight = torch.rand(5, generator=generator) + 0.2
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = WeightedCrossEntropy(weight)(logits, targets)
        expected = torch.nn.CrossEntropyLoss(weight=weight)(logits, targets)
    assert ours.dtype == expected.dtype == torch.float32
    assert torch.allclose(ours, expected, atol=1e-6)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_weighted_focal_loss_with_zero_gamma_equals_weighted_cross_entropy(
    label_smoothing: float,
) -> None:
    """The docs promise it: gamma 0 is cross-entropy and class weights act as its alpha,
    normalized as PyTorch's weighted mean (by the weights of the batch's targets)."""
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(32, 5, generator=generator)
    targets = torch.randint(0, 5, (32,), generator=generator)
    weight = torch.rand(5, generator=generator) + 0.2
    expected = F.cross_entropy(logits, targets, weight=weight, label_smoothing=label_smoothing)
    ours = FocalLoss(0.0, label_smoothing, alpha=weight)(logits, targets)
    assert torch.allclose(ours, expected, atol=1e-6)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_weighted_focal_loss_takes_soft_targets_as_cross_entropy_does(
    label_smoothing: float,
) -> None:
    """With class probabilities (mixup, cutmix) PyTorch's weighted mean divides by the
    batch size, not by a sum of weights."""
    generator = torch.Generator().manual_seed(4)
    logits = torch.randn(16, 4, generator=generator)
    soft = torch.softmax(torch.randn(16, 4, generator=generator), dim=1)
    weight = torch.rand(4, generator=generator) + 0.2
    expected = F.cross_entropy(logits, soft, weight=weight, label_smoothing=label_smoothing)
    ours = FocalLoss(0.0, label_smoothing, alpha=weight)(logits, soft)
    assert torch.allclose(ours, expected, atol=1e-6)


def test_weighted_focal_loss_down_weights_easy_examples_of_every_class() -> None:
    logits = torch.tensor([[4.0, 0.0], [0.0, 0.5], [0.0, 3.0]])
    targets = torch.tensor([0, 0, 1])
    weight = torch.tensor([2.0, 0.5])
    focal = FocalLoss(2.0, alpha=weight)(logits, targets)
    assert 0 < float(focal) < float(F.cross_entropy(logits, targets, weight=weight))
