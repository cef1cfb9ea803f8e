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


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_weighted_cross_entropy_of_one_hot_probabilities_equals_that_of_indices(
    label_smoothing: float,
) -> None:
    """Mixup or cutmix turns a batch's targets into probabilities: the loss, and its
    gradients, keep their scale (PyTorch's own divides by the batch size there)."""
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(16, 4, generator=generator)
    targets = torch.randint(0, 4, (16,), generator=generator)
    weight = torch.tensor([0.03, 0.5, 1.5, 1.97])  # effective-number weights: mean 1
    loss = WeightedCrossEntropy(weight, label_smoothing)
    one_hot = F.one_hot(targets, 4).float()
    assert torch.allclose(loss(logits, one_hot), loss(logits, targets), atol=1e-6)


def test_weighted_cross_entropy_weighs_a_mixed_image_by_its_mix_of_class_weights() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    mixed = torch.tensor([[0.75, 0.25], [0.0, 1.0]])
    weight = torch.tensor([0.2, 1.8])
    nll = -torch.log_softmax(logits, dim=1)
    image_weights = torch.tensor([0.75 * 0.2 + 0.25 * 1.8, 1.8])
    expected = (nll * mixed * weight).sum() / image_weights.sum()
    assert torch.allclose(WeightedCrossEntropy(weight)(logits, mixed), expected, atol=1e-6)


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
def test_weighted_focal_loss_with_zero_gamma_equals_weighted_cross_entropy_on_soft_targets(
    label_smoothing: float,
) -> None:
    generator = torch.Generator().manual_seed(4)
    logits = torch.randn(16, 4, generator=generator)
    soft = torch.softmax(torch.randn(16, 4, generator=generator), dim=1)
    weight = torch.rand(4, generator=generator) + 0.2
    expected = WeightedCrossEntropy(weight, label_smoothing)(logits, soft)
    ours = FocalLoss(0.0, label_smoothing, alpha=weight)(logits, soft)
    assert torch.allclose(ours, expected, atol=1e-6)


@pytest.mark.parametrize("gamma", [0.0, 2.0])
def test_weighted_focal_loss_of_one_hot_probabilities_equals_that_of_indices(
    gamma: float,
) -> None:
    generator = torch.Generator().manual_seed(5)
    logits = torch.randn(16, 4, generator=generator)
    targets = torch.randint(0, 4, (16,), generator=generator)
    alpha = torch.tensor([0.01, 0.04, 0.15, 0.8])  # the focal strategy's: sums to 1
    focal = FocalLoss(gamma, alpha=alpha)
    one_hot = F.one_hot(targets, 4).float()
    assert torch.allclose(focal(logits, one_hot), focal(logits, targets), atol=1e-6)


def test_weighted_focal_loss_down_weights_easy_examples_of_every_class() -> None:
    logits = torch.tensor([[4.0, 0.0], [0.0, 0.5], [0.0, 3.0]])
    targets = torch.tensor([0, 0, 1])
    weight = torch.tensor([2.0, 0.5])
    focal = FocalLoss(2.0, alpha=weight)(logits, targets)
    assert 0 < float(focal) < float(F.cross_entropy(logits, targets, weight=weight))
