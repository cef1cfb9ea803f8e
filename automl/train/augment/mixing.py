"""Mixup and cutmix: each image is mixed with another of the batch, and so are the labels.

Both turn class-index targets into class probabilities ``(N, K)``. The mixing weight is
drawn per sample from Beta(alpha, alpha), and the partner is a random permutation of the
batch, all from the given generator (torchvision's ``v2.MixUp`` and ``v2.CutMix`` draw one
weight per batch from the global random state and accept only class indices).
"""

from __future__ import annotations

import torch
from pydantic import Field

from automl.train.augment.base import (
    AUGMENTATIONS,
    Augment,
    AugmentOptions,
    sample_beta,
    sample_mask,
    uniform,
)
from automl.train.augment.erasing import box_mask


class MixOptions(AugmentOptions):
    """Options of ``mixup`` and ``cutmix``."""

    alpha: float = Field(
        1.0, gt=0, le=10, description="Beta(alpha, alpha) of the mixing weight; small: mild."
    )


def soft_targets(targets: torch.Tensor, num_classes: int, dtype: torch.dtype) -> torch.Tensor:
    """Class probabilities ``(N, K)`` of index or probability targets.

    One-hot by ``scatter_``: ``F.one_hot`` reads the targets' range on the host on the CPU.
    """
    if targets.dim() == 2:
        return targets.to(dtype)
    soft = torch.zeros(len(targets), num_classes, dtype=dtype, device=targets.device)
    return soft.scatter_(1, targets.view(-1, 1), 1.0)


def _weights_and_partners(
    n: int, opts: MixOptions, generator: torch.Generator, like: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample weight of the sample itself (1 where it is not mixed) and partner index."""
    mix = sample_mask(n, opts.p, generator, like.device)
    weight = sample_beta(opts.alpha, n, generator, like.device).to(like.dtype)
    weight = torch.where(mix, weight, torch.ones_like(weight))
    partner = torch.randperm(n, generator=generator, device=like.device)
    return weight, partner


def _mix_targets(
    targets: torch.Tensor, weight: torch.Tensor, partner: torch.Tensor, num_classes: int
) -> torch.Tensor:
    soft = soft_targets(targets, num_classes, weight.dtype)
    weight = weight.view(-1, 1)
    return weight * soft + (1 - weight) * soft[partner]


@AUGMENTATIONS.register("mixup", options=MixOptions)
def mixup(opts: MixOptions, num_classes: int) -> Augment:
    """Mixup (Zhang et al., 2018): a weighted average of two images and of their labels."""

    def apply(
        images: torch.Tensor, targets: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        weight, partner = _weights_and_partners(len(images), opts, generator, images)
        w = weight.view(-1, 1, 1, 1)
        mixed = w * images + (1 - w) * images[partner]
        return mixed, _mix_targets(targets, weight, partner, num_classes)

    return apply


@AUGMENTATIONS.register("cutmix", options=MixOptions)
def cutmix(opts: MixOptions, num_classes: int) -> Augment:
    """CutMix (Yun et al., 2019): a rectangle from another image; labels mixed by area."""

    def apply(
        images: torch.Tensor, targets: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n, _, height, width = images.shape
        weight, partner = _weights_and_partners(n, opts, generator, images)
        side = (1 - weight).sqrt()
        center_y = uniform(n, 0, height, generator, images)
        center_x = uniform(n, 0, width, generator, images)
        top = (center_y - side * height / 2).round().clamp(0, height)
        bottom = (center_y + side * height / 2).round().clamp(0, height)
        left = (center_x - side * width / 2).round().clamp(0, width)
        right = (center_x + side * width / 2).round().clamp(0, width)
        mask = box_mask(top, left, bottom - top, right - left, height, width)
        pasted = torch.where(mask, images[partner], images)
        kept = 1 - (bottom - top) * (right - left) / (height * width)  # the box once clipped
        return pasted, _mix_targets(targets, kept, partner, num_classes)

    return apply
