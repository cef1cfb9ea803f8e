"""RandAugment and TrivialAugmentWide, with the operation chosen per sample.

Each sample draws its own operation (and, for TrivialAugmentWide, its own magnitude).
Each operation runs once per round, with per-sample magnitudes: on the CPU on its group of
samples (one sort per round), on a GPU on the whole batch, keeping its own samples (the
group sizes would make the host wait for the GPU at every batch). The operations and
magnitude ranges follow torchvision's ``RandAugment`` and ``TrivialAugmentWide``, on 31
magnitude bins.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from pydantic import Field

from automl.train.augment import functional as AF
from automl.train.augment.base import (
    AUGMENTATIONS,
    Augment,
    AugmentOptions,
    device_constant,
    random_sign,
    sample_mask,
)

BINS = 31
"""Magnitude bins, as in torchvision: bin 0 is the mildest, bin 30 the strongest."""
STANDARD_TRANSLATE = 150 / 331
"""RandAugment translates by up to this share of the side (torchvision's choice)."""
WIDE_TRANSLATE_PX = 32.0
"""TrivialAugmentWide translates by up to this many pixels (the paper's, for 32-px CIFAR);
a smaller image by up to the same share of its side, not past it several times over."""

Apply = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``apply(images, values) -> images``, one value per image."""


def _warp_linear(matrices: Callable[[torch.Tensor], torch.Tensor]) -> Apply:
    """An operation that warps each image by ``matrices(values)`` about its center."""

    def apply(images: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        shift = values.new_zeros(len(values), 2)
        return AF.warp(images, AF.affine_theta(matrices(values), shift, height, width))

    return apply


def _warp_shift(axis: int) -> Apply:
    """An operation that shifts each image by ``values`` pixels along x (0) or y (1)."""

    def apply(images: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        identity = torch.eye(2, dtype=values.dtype, device=values.device)
        shift = values.new_zeros(len(values), 2)
        shift[:, axis] = values
        theta = AF.affine_theta(identity.expand(len(values), 2, 2), shift, height, width)
        return AF.warp(images, theta)

    return apply


def _factor(adjust: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Apply:
    return lambda images, values: adjust(images, 1 + values)


@dataclass(frozen=True)
class Op:
    """One operation of the policies.

    Attributes:
        name: As in torchvision.
        apply: ``apply(images, values)``; None for the identity.
        standard: RandAugment's magnitudes ``(bin 0, bin 30)`` (linear between).
        wide: TrivialAugmentWide's magnitudes.
        signed: Whether a magnitude applies either way (random sign).
    """

    name: str
    apply: Apply | None
    standard: tuple[float, float] = (0.0, 0.0)
    wide: tuple[float, float] = (0.0, 0.0)
    signed: bool = False


OPS: tuple[Op, ...] = (
    Op("Identity", None),
    Op("ShearX", _warp_linear(lambda v: AF.shear(v, 0)), (0, 0.3), (0, 0.99), True),
    Op("ShearY", _warp_linear(lambda v: AF.shear(v, 1)), (0, 0.3), (0, 0.99), True),
    # Translations: RandAugment's range is a share of the side, TrivialAugmentWide's is in
    # pixels; magnitude_table turns both into pixels.
    Op("TranslateX", _warp_shift(0), (0, STANDARD_TRANSLATE), (0, WIDE_TRANSLATE_PX), True),
    Op("TranslateY", _warp_shift(1), (0, STANDARD_TRANSLATE), (0, WIDE_TRANSLATE_PX), True),
    Op("Rotate", _warp_linear(AF.rotation), (0, 30), (0, 135), True),
    Op("Brightness", _factor(AF.adjust_brightness), (0, 0.9), (0, 0.99), True),
    Op("Color", _factor(AF.adjust_saturation), (0, 0.9), (0, 0.99), True),
    Op("Contrast", _factor(AF.adjust_contrast), (0, 0.9), (0, 0.99), True),
    Op("Sharpness", _factor(AF.adjust_sharpness), (0, 0.9), (0, 0.99), True),
    Op("Posterize", AF.posterize, (8, 4), (8, 2)),
    Op("Solarize", AF.solarize, (1, 0), (1, 0)),
    Op("AutoContrast", lambda images, _: AF.autocontrast(images)),
    Op("Equalize", lambda images, _: AF.equalize(images)),
)


def magnitude_table(wide: bool, height: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """``(len(OPS), BINS)``: each operation's magnitude at each bin, for an image size."""
    bins = torch.linspace(0, 1, BINS, device=like.device, dtype=like.dtype)
    rows = []
    for op in OPS:
        low, high = op.wide if wide else op.standard
        if op.name.startswith("Translate"):
            side = width if op.name == "TranslateX" else height
            high *= min(1.0, side / WIDE_TRANSLATE_PX) if wide else side
        values = low + (high - low) * bins
        if op.name == "Posterize":
            values = values.round()
        rows.append(values)
    return torch.stack(rows)


def apply_ops(
    images: torch.Tensor,
    ops: torch.Tensor,
    values: torch.Tensor,
    grouped: bool | None = None,
) -> torch.Tensor:
    """Applies ``OPS[ops[i]]`` with ``values[i]`` to image i, one call per operation.

    Args:
        images: ``(N, C, H, W)`` float images in [0, 1].
        ops: ``(N,)`` indices into ``OPS``.
        values: ``(N,)`` magnitudes.
        grouped: Run each operation on its own samples only (sorted by operation; the
            group sizes are read on the host) rather than on the whole batch, keeping its
            own samples (no host sync, more arithmetic). Default: grouped on the CPU,
            whole batch elsewhere. Both give the same images.
    """
    if grouped is None:
        grouped = images.device.type == "cpu"
    if not grouped:
        out = images
        for index, op in enumerate(OPS):
            if op.apply is None:
                continue
            mine = ops == index
            # Other samples get the neutral magnitude 0, so nothing overflows needlessly.
            changed = op.apply(images, torch.where(mine, values, 0.0)).to(images.dtype)
            out = torch.where(mine.view(-1, 1, 1, 1), changed, out)
        return out
    order = torch.argsort(ops)
    counts = torch.bincount(ops, minlength=len(OPS)).tolist()
    out = images.clone()
    for op, group in zip(OPS, order.split(counts), strict=True):
        if op.apply is None or len(group) == 0:
            continue
        out[group] = op.apply(images[group], values[group]).to(images.dtype)
    return out


def _signed_values(
    table: torch.Tensor, ops: torch.Tensor, bins: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    signed = device_constant(tuple(op.signed for op in OPS), ops, torch.bool)[ops]
    values = table[ops, bins]
    sign = random_sign(len(ops), generator, values)
    return torch.where(signed, values * sign, values)


class RandAugmentOptions(AugmentOptions):
    """Options of ``randaugment``."""

    num_ops: int = Field(2, ge=1, le=5, description="Operations applied in a row.")
    magnitude: int = Field(
        9, ge=0, le=BINS - 1, description="Strength of every operation, 0 to 30."
    )


@AUGMENTATIONS.register("randaugment", options=RandAugmentOptions)
def randaugment(opts: RandAugmentOptions, num_classes: int) -> Augment:
    """RandAugment (Cubuk et al., 2020): num_ops random operations at one magnitude."""

    def apply(
        images: torch.Tensor, targets: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n, _, height, width = images.shape
        chosen = sample_mask(n, opts.p, generator, images.device)
        table = magnitude_table(False, height, width, images)
        bins = torch.full((n,), opts.magnitude, device=images.device)
        for _ in range(opts.num_ops):
            ops = torch.randint(0, len(OPS), (n,), generator=generator, device=images.device)
            ops = torch.where(chosen, ops, 0)  # 0 is the identity
            images = apply_ops(images, ops, _signed_values(table, ops, bins, generator))
        return images, targets

    return apply


@AUGMENTATIONS.register("trivialaugment", options=AugmentOptions)
def trivialaugment(opts: AugmentOptions, num_classes: int) -> Augment:
    """TrivialAugmentWide (Muller and Hutter, 2021): one random operation, random magnitude."""

    def apply(
        images: torch.Tensor, targets: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n, _, height, width = images.shape
        chosen = sample_mask(n, opts.p, generator, images.device)
        table = magnitude_table(True, height, width, images)
        ops = torch.randint(0, len(OPS), (n,), generator=generator, device=images.device)
        ops = torch.where(chosen, ops, 0)
        bins = torch.randint(0, BINS, (n,), generator=generator, device=images.device)
        return apply_ops(images, ops, _signed_values(table, ops, bins, generator)), targets

    return apply
