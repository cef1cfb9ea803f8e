"""Loss functions, registered by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn import functional as F

from automl.registry import Registry

if TYPE_CHECKING:
    from automl.train.config import TrialConfig

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LossFactory = Callable[["TrialConfig", int], LossFn]

LOSSES: Registry[LossFactory] = Registry("loss")


@LOSSES.register("cross_entropy")
def cross_entropy(config: TrialConfig, num_classes: int) -> LossFn:
    """Cross-entropy, with ``label_smoothing``."""
    return nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)


class FocalLoss(nn.Module):
    """Focal loss (Lin et al., 2017): cross-entropy scaled by ``(1 - p_true) ** gamma``."""

    def __init__(self, gamma: float, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.gamma = gamma
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Returns the mean focal loss of a batch."""
        per_sample = F.cross_entropy(
            logits, targets, reduction="none", label_smoothing=self.label_smoothing
        )
        p_true = torch.exp(-F.cross_entropy(logits, targets, reduction="none"))
        return ((1.0 - p_true) ** self.gamma * per_sample).mean()


@LOSSES.register("focal")
def focal(config: TrialConfig, num_classes: int) -> LossFn:
    """Focal loss with ``focal_gamma``, for hard or rare classes."""
    return FocalLoss(config.focal_gamma, config.label_smoothing)


def build_loss(config: TrialConfig, num_classes: int) -> LossFn:
    """Builds the loss named by ``config.loss``."""
    return LOSSES.get(config.loss)(config, num_classes)
