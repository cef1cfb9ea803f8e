"""Loss functions, registered by name with their options.

Every loss accepts soft targets (class probabilities, as mixup and cutmix produce) as
well as class indices, and optional per-class weights (from an imbalance strategy).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from automl.registry import EntryOptions, Registry

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class LossFactory(Protocol):
    """Builds a loss for ``num_classes`` classes, optionally weighted per class."""

    def __call__(
        self, options: Any, num_classes: int, class_weights: torch.Tensor | None
    ) -> LossFn: ...


LOSSES: Registry[LossFactory] = Registry("loss", group="automl.losses", qualifies=True)


class CrossEntropyOptions(EntryOptions):
    """Options of the cross-entropy loss."""

    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Mass spread over all classes.")


class FocalOptions(CrossEntropyOptions):
    """Options of the focal loss."""

    gamma: float = Field(2.0, ge=0, le=10, description="Focusing exponent; 0 is cross-entropy.")


@LOSSES.register("cross_entropy", options=CrossEntropyOptions)
def cross_entropy(
    opts: CrossEntropyOptions, num_classes: int, class_weights: torch.Tensor | None
) -> LossFn:
    """Cross-entropy with label smoothing (weighted per class under ``class_weights``)."""
    if class_weights is None:
        return nn.CrossEntropyLoss(label_smoothing=opts.label_smoothing)
    return WeightedCrossEntropy(class_weights, opts.label_smoothing)


class WeightedCrossEntropy(nn.Module):
    """``nn.CrossEntropyLoss(weight=..., label_smoothing=...)`` over class indices, computed
    with plain tensor ops (PyTorch's weighted CUDA kernel makes the host wait for the GPU at
    every step); over class probabilities, averaged by each image's weight (``forward``).

    Args:
        weight: One weight per class.
        label_smoothing: Share of the target spread over all classes.
    """

    def __init__(self, weight: torch.Tensor, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The weighted mean loss of the batch: ``target`` holds class indices, or class
        probabilities (mixup, cutmix).

        Over class probabilities, each image weighs its label's mix of class weights, so
        a batch of one-hot probabilities has the loss of its indices. (PyTorch divides by
        the batch size there: a batch that mixup touched at all would have its loss, and
        its gradients, scaled by the mean weight of its images.)
        """
        logits = logits.float()  # as under CUDA autocast; CPU autocast keeps bf16 here
        weight = self.weight.to(logits.dtype)
        nll = -F.log_softmax(logits, dim=1)
        if target.is_floating_point():
            classes = logits.shape[1]
            soft = target * (1.0 - self.label_smoothing) + self.label_smoothing / classes
            return (nll * soft * weight).sum() / (target * weight).sum()
        target_weight = weight[target]
        picked = nll.gather(1, target.unsqueeze(1)).squeeze(1) * target_weight
        loss = (1.0 - self.label_smoothing) * picked
        if self.label_smoothing:
            spread = (nll * weight).sum(dim=1) / logits.shape[1]
            loss = loss + self.label_smoothing * spread
        return loss.sum() / target_weight.sum()


class FocalLoss(nn.Module):
    """Focal loss (Lin et al., 2017): cross-entropy scaled by ``(1 - p_true) ** gamma``.

    Args:
        gamma: Focusing exponent.
        label_smoothing: As in ``nn.CrossEntropyLoss``.
        alpha: Optional per-class weights (the paper's alpha), shape ``(num_classes,)``.
    """

    def __init__(
        self, gamma: float, label_smoothing: float = 0.0, alpha: torch.Tensor | None = None
    ) -> None:
        super().__init__()
        self.gamma = gamma
        self.label_smoothing = label_smoothing
        self.register_buffer("alpha", alpha)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Returns the mean focal loss of a batch (index or probability targets).

        Averaged as ``WeightedCrossEntropy`` averages, so that gamma 0 is that loss: a sum
        divided by the summed alpha of the batch's targets (over class probabilities, of
        each image's mix of classes).
        """
        log_probs = F.log_softmax(logits.float(), dim=1)
        if targets.dim() == 1:
            # One-hot by scatter_: F.one_hot reads the targets' range (a host sync).
            targets = torch.zeros_like(log_probs).scatter_(1, targets.view(-1, 1), 1.0)
        norm = None if self.alpha is None else (targets * self.alpha).sum()
        p_true = (log_probs.exp() * targets).sum(dim=1)
        if self.label_smoothing:
            targets = targets * (1 - self.label_smoothing) + self.label_smoothing / logits.shape[1]
        per_class = -targets * log_probs
        if self.alpha is not None:
            per_class = per_class * self.alpha
        per_sample = (1.0 - p_true).clamp(min=0) ** self.gamma * per_class.sum(dim=1)
        return per_sample.mean() if norm is None else per_sample.sum() / norm


@LOSSES.register("focal", options=FocalOptions)
def focal(opts: FocalOptions, num_classes: int, class_weights: torch.Tensor | None) -> LossFn:
    """Focal loss, for hard or rare classes (class weights act as its alpha)."""
    return FocalLoss(opts.gamma, opts.label_smoothing, class_weights)


def build_loss(
    name: str,
    options: Mapping[str, Any],
    num_classes: int,
    class_weights: torch.Tensor | None = None,
) -> LossFn:
    """Builds the loss ``name`` with its ``options``."""
    entry = LOSSES.get(name)
    loss = entry.factory(entry.parse_options(options), num_classes, class_weights)
    return LOSSES.made(entry, loss, Callable, "a loss(logits, targets) -> tensor")  # type: ignore[arg-type]
