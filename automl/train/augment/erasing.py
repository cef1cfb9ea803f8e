"""Random erasing: a random rectangle of each image is blanked."""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field

from automl.train.augment.base import (
    AUGMENTATIONS,
    Augment,
    AugmentOptions,
    sample_mask,
    uniform,
)

MAX_RATIO = 3.3
"""Aspect ratios of the rectangles are drawn log-uniformly from [1 / 3.3, 3.3]."""
MIN_AREA = 0.02
"""Areas are drawn from [MIN_AREA, max_area] (shares of the image; as torchvision)."""


class ErasingOptions(AugmentOptions):
    """Options of ``erasing``."""

    max_area: float = Field(
        0.33, gt=0, le=1, description="Largest rectangle, as a share of the area (from 0.02)."
    )
    fill: Literal["zeros", "noise"] = Field(
        "zeros", description="What the rectangle shows: black or uniform noise."
    )


@AUGMENTATIONS.register("erasing", options=ErasingOptions)
def erasing(opts: ErasingOptions, num_classes: int) -> Augment:
    """Random erasing (Zhong et al., 2017): blanks a random rectangle of each image."""
    log_ratio = math.log(MAX_RATIO)

    def apply(
        images: torch.Tensor, targets: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n, _, height, width = images.shape
        erase = sample_mask(n, opts.p, generator, images.device)
        low = min(MIN_AREA, opts.max_area)
        area = uniform(n, low, opts.max_area, generator, images) * (height * width)
        ratio = uniform(n, -log_ratio, log_ratio, generator, images).exp()
        box_h = (area * ratio).sqrt().round().clamp(1, height)
        box_w = (area / ratio).sqrt().round().clamp(1, width)
        top = (uniform(n, 0, 1, generator, images) * (height - box_h + 1)).floor()
        left = (uniform(n, 0, 1, generator, images) * (width - box_w + 1)).floor()
        mask = box_mask(top, left, box_h, box_w, height, width) & erase.view(-1, 1, 1, 1)
        if opts.fill == "noise":
            fill = torch.rand(images.shape, generator=generator, device=images.device)
            return torch.where(mask, fill.to(images.dtype), images), targets
        return images.masked_fill(mask, 0.0), targets

    return apply


def box_mask(
    top: torch.Tensor,
    left: torch.Tensor,
    box_h: torch.Tensor,
    box_w: torch.Tensor,
    height: int,
    width: int,
) -> torch.Tensor:
    """``(N, 1, H, W)`` boolean masks, True inside each sample's rectangle."""
    rows = torch.arange(height, device=top.device, dtype=top.dtype).view(1, height, 1)
    cols = torch.arange(width, device=top.device, dtype=top.dtype).view(1, 1, width)
    inside_rows = (rows >= top.view(-1, 1, 1)) & (rows < (top + box_h).view(-1, 1, 1))
    inside_cols = (cols >= left.view(-1, 1, 1)) & (cols < (left + box_w).view(-1, 1, 1))
    return (inside_rows & inside_cols).unsqueeze(1)
