"""Geometric augmentations: flips, crops, rotation and translation, per sample."""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field

from automl.train.augment import functional as AF
from automl.train.augment.base import (
    AUGMENTATIONS,
    Augment,
    AugmentOptions,
    sample_mask,
    uniform,
)


@AUGMENTATIONS.register("hflip", options=AugmentOptions)
def hflip(opts: AugmentOptions, num_classes: int) -> Augment:
    """Horizontal flip of each image with probability p."""

    def apply(
        images: torch.Tensor, targets: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        flip = sample_mask(len(images), opts.p, generator, images.device)
        return torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images), targets

    return apply


class ResizedCropOptions(AugmentOptions):
    """Options of ``resized_crop``."""

    min_scale: float = Field(
        0.35, gt=0, le=1, description="Smallest crop, as a share of the image's area."
    )
    max_ratio: float = Field(
        1.33, ge=1, le=4, description="Largest aspect ratio of the crop (and 1/it smallest)."
    )


@AUGMENTATIONS.register("resized_crop", options=ResizedCropOptions)
def resized_crop(opts: ResizedCropOptions, num_classes: int) -> Augment:
    """Random resized crop: a random area and aspect ratio, scaled back to full size."""
    log_ratio = math.log(opts.max_ratio)

    def apply(
        images: torch.Tensor, targets: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(images)
        crop = sample_mask(n, opts.p, generator, images.device)
        area = uniform(n, opts.min_scale, 1.0, generator, images)
        ratio = uniform(n, -log_ratio, log_ratio, generator, images).exp()
        # Sides as shares of the image's; a crop that would not fit is clipped to the image.
        crop_w = (area * ratio).sqrt().clamp(max=1.0)
        crop_h = (area / ratio).sqrt().clamp(max=1.0)
        center_x = uniform(n, -1.0, 1.0, generator, images) * (1 - crop_w)
        center_y = uniform(n, -1.0, 1.0, generator, images) * (1 - crop_h)
        zero = torch.zeros_like(crop_w)
        theta = torch.stack(
            [
                torch.stack([crop_w, zero, center_x], -1),
                torch.stack([zero, crop_h, center_y], -1),
            ],
            -2,
        )
        cropped = AF.warp(images, theta, padding_mode="border")
        return torch.where(crop.view(-1, 1, 1, 1), cropped, images), targets

    return apply


class PadCropOptions(AugmentOptions):
    """Options of ``pad_crop``."""

    pad: int = Field(
        4,
        ge=1,
        le=64,
        description=(
            "Pixels added on each side before cropping; with fill: reflect at most the "
            "image's side minus 1 (a larger pad acts as side - 1)."
        ),
    )
    fill: Literal["reflect", "zeros"] = Field(
        "reflect", description="What the padding shows: the mirrored image or black."
    )


@AUGMENTATIONS.register("pad_crop", options=PadCropOptions)
def pad_crop(opts: PadCropOptions, num_classes: int) -> Augment:
    """Pad and crop: shifts each image by up to ``pad`` pixels (exact, no resampling)."""

    def apply(
        images: torch.Tensor, targets: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n, channels, height, width = images.shape
        # A mirror cannot reach past the image: reflect padding needs pad < side.
        pad = min(opts.pad, height - 1, width - 1) if opts.fill == "reflect" else opts.pad
        if pad < 1:
            return images, targets
        mode = "reflect" if opts.fill == "reflect" else "constant"
        padded = torch.nn.functional.pad(images, (pad, pad, pad, pad), mode=mode)
        shift = sample_mask(n, opts.p, generator, images.device)
        offsets = torch.randint(0, 2 * pad + 1, (2, n), generator=generator, device=images.device)
        offsets = torch.where(shift, offsets, pad)
        rows = offsets[0].view(n, 1, 1) + torch.arange(height, device=images.device).view(1, -1, 1)
        cols = offsets[1].view(n, 1, 1) + torch.arange(width, device=images.device).view(1, 1, -1)
        index = (rows * padded.shape[-1] + cols).view(n, 1, height * width)
        window = padded.flatten(2).gather(2, index.expand(n, channels, -1))
        return window.view(n, channels, height, width), targets

    return apply


class AffineOptions(AugmentOptions):
    """Options of ``affine``."""

    degrees: float = Field(15.0, ge=0, le=180, description="Largest rotation either way.")
    translate: float = Field(
        0.1, ge=0, le=0.5, description="Largest shift either way, as a share of the side."
    )
    fill: Literal["zeros", "border", "reflection"] = Field(
        "zeros", description="What shows where the image moved away: black, edge, mirror."
    )


@AUGMENTATIONS.register("affine", options=AffineOptions)
def affine(opts: AffineOptions, num_classes: int) -> Augment:
    """Small random rotation and translation of each image."""

    def apply(
        images: torch.Tensor, targets: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n, _, height, width = images.shape
        move = sample_mask(n, opts.p, generator, images.device)
        angle = uniform(n, -opts.degrees, opts.degrees, generator, images)
        shift = torch.stack(
            [
                uniform(n, -opts.translate, opts.translate, generator, images) * width,
                uniform(n, -opts.translate, opts.translate, generator, images) * height,
            ],
            -1,
        )
        theta = AF.affine_theta(AF.rotation(angle), shift, height, width)
        moved = AF.warp(images, theta, padding_mode=opts.fill)
        return torch.where(move.view(-1, 1, 1, 1), moved, images), targets

    return apply
