"""Color augmentations, with per-sample factors."""

from __future__ import annotations

import torch
from pydantic import Field

from automl.registry import RGB_ONLY
from automl.train.augment import functional as AF
from automl.train.augment.base import (
    AUGMENTATIONS,
    Augment,
    AugmentOptions,
    sample_mask,
    uniform,
)


class ColorJitterOptions(AugmentOptions):
    """Options of ``color_jitter``."""

    brightness: float = Field(
        0.4, ge=0, le=1, description="Brightness factor drawn from [1 - it, 1 + it]."
    )
    contrast: float = Field(0.4, ge=0, le=1, description="Contrast factor from [1 - it, 1 + it].")
    saturation: float = Field(
        0.4,
        ge=0,
        le=1,
        description="Saturation factor from [1 - it, 1 + it] (RGB only).",
        json_schema_extra=RGB_ONLY,
    )
    hue: float = Field(
        0.0,
        ge=0,
        le=0.5,
        description="Hue shift from [-it, it] turns (RGB only).",
        json_schema_extra=RGB_ONLY,
    )


@AUGMENTATIONS.register("color_jitter", options=ColorJitterOptions)
def color_jitter(opts: ColorJitterOptions, num_classes: int) -> Augment:
    """Color jitter: per-image brightness, contrast, saturation and hue, in that order."""

    def apply(
        images: torch.Tensor, targets: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(images)
        jitter = sample_mask(n, opts.p, generator, images.device)
        out = images
        for strength, adjust in (
            (opts.brightness, AF.adjust_brightness),
            (opts.contrast, AF.adjust_contrast),
            (opts.saturation, AF.adjust_saturation),
        ):
            if strength > 0:
                out = adjust(out, uniform(n, 1 - strength, 1 + strength, generator, images))
        if opts.hue > 0:
            out = AF.rotate_hue(out, uniform(n, -opts.hue, opts.hue, generator, images))
        return torch.where(jitter.view(-1, 1, 1, 1), out, images), targets

    return apply
