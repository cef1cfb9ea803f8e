"""Data augmentation on batches on the device, registered by name with their options.

Every augmentation takes a batch of float images in [0, 1] shaped ``(N, C, H, W)`` and
their targets, and draws its randomness per sample from a ``torch.Generator`` on the
batch's device, so there is no per-sample Python. Validation and test data are never
augmented. An augmentation is applied when its probability ``p`` is above zero; the
pipeline applies them in ``PIPELINE_ORDER``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from pydantic import Field

from automl.registry import EntryOptions, Registry

Augment = Callable[[torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]
"""``augment(images, targets, generator) -> (images, targets)``; targets are class indices
``(N,)`` or class probabilities ``(N, K)`` (mixing augmentations produce the latter)."""
AugmentFactory = Callable[[Any], Augment]

AUGMENTATIONS: Registry[AugmentFactory] = Registry("augmentation", group="automl.augmentations")

PIPELINE_ORDER: list[str] = ["hflip"]
"""Order of the built-in augmentations; plugins' entries run after them, by name."""


class AugmentOptions(EntryOptions):
    """Base of every augmentation's options."""

    p: float = Field(0.0, ge=0, le=1, description="Probability of applying it to an image.")


def sample_mask(n: int, p: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """A boolean ``(n,)`` mask, each element True with probability ``p``."""
    return torch.rand(n, generator=generator, device=device) < p


@AUGMENTATIONS.register("hflip", options=AugmentOptions)
def hflip(opts: AugmentOptions) -> Augment:
    """Horizontal flip of each image with probability p."""

    def apply(
        images: torch.Tensor, targets: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        flip = sample_mask(len(images), opts.p, generator, images.device)
        return torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images), targets

    return apply


def build_pipeline(config: Mapping[str, Mapping[str, Any]]) -> Augment | None:
    """Chains the augmentations of ``config`` (name -> options) whose ``p`` is above zero.

    Returns:
        The pipeline, or None when nothing is enabled.
    """
    steps: list[Augment] = []
    for name in _ordered(config):
        entry = AUGMENTATIONS.get(name)
        options = entry.parse_options(config[name])
        if getattr(options, "p", 1.0) > 0:
            steps.append(entry.factory(options))
    if not steps:
        return None

    def pipeline(
        images: torch.Tensor, targets: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        for step in steps:
            images, targets = step(images, targets, generator)
        return images, targets

    return pipeline


def _ordered(names: Mapping[str, Any]) -> list[str]:
    known = [name for name in PIPELINE_ORDER if name in names]
    return known + sorted(name for name in names if name not in PIPELINE_ORDER)
