"""Image operations with per-sample parameters, vectorized over a batch.

``torchvision.transforms.v2`` applies one set of parameters to a whole batch; these take
one parameter per sample (tensors of shape ``(N,)``). Images are float ``(N, C, H, W)`` in
[0, 1]; results stay in [0, 1] with the input's dtype.

Nothing here makes the host wait for a GPU: no ``.item()``, no boolean-mask indexing, no
``torch.linalg`` calls that check their result on the host, and constants reach the
device with non-blocking copies.
"""

from __future__ import annotations

import functools
import importlib
import math
from typing import Any

import torch
from torch.nn import functional as F

from automl.train.augment.base import device_constant

PaddingMode = str
"""``grid_sample`` padding: ``zeros``, ``border`` or ``reflection``."""

_GRAY_WEIGHTS = (0.299, 0.587, 0.114)
_RGB_TO_YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))


@functools.cache
def _torchvision_functional() -> Any:
    """``torchvision.transforms.v2.functional``, imported on first use: importing torchvision
    costs seconds at start-up (it imports ``torch._dynamo``), and most trials never need it."""
    return importlib.import_module("torchvision.transforms.v2.functional")


def _per_sample(values: torch.Tensor) -> torch.Tensor:
    """``(N,)`` -> ``(N, 1, 1, 1)``, to broadcast over images."""
    return values.view(-1, 1, 1, 1)


def affine_theta(
    linear: torch.Tensor, translate: torch.Tensor, height: int, width: int
) -> torch.Tensor:
    """``affine_grid`` matrices for per-sample affine maps in pixel space, about the center.

    Args:
        linear: ``(N, 2, 2)``: each output point is ``linear @ input point + translate``,
            in pixels from the image center (x right, y down).
        translate: ``(N, 2)`` shifts in pixels.
        height: Image height.
        width: Image width.

    Returns:
        ``(N, 2, 3)``: for each output pixel, where to sample the input, in the
        normalized coordinates of ``F.affine_grid``.
    """
    # normalized input = S^-1 A^-1 (S normalized output - t), S = diag(width / 2, height / 2).
    # The 2x2 inverse is written out: torch.linalg.inv would check it on the host.
    a, b = linear[:, 0, 0], linear[:, 0, 1]
    c, d = linear[:, 1, 0], linear[:, 1, 1]
    det = a * d - b * c
    i00, i01, i10, i11 = d / det, -b / det, -c / det, a / det
    half_w, half_h = width / 2.0, height / 2.0
    shift_x, shift_y = translate[:, 0], translate[:, 1]
    rows = [
        torch.stack([i00, i01 * (half_h / half_w), -(i00 * shift_x + i01 * shift_y) / half_w], -1),
        torch.stack([i10 * (half_w / half_h), i11, -(i10 * shift_x + i11 * shift_y) / half_h], -1),
    ]
    return torch.stack(rows, -2)


def warp(
    images: torch.Tensor, theta: torch.Tensor, padding_mode: PaddingMode = "zeros"
) -> torch.Tensor:
    """Resamples each image with its ``(2, 3)`` matrix (bilinear; outside: ``padding_mode``)."""
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(
        images, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False
    )


def rotation(degrees: torch.Tensor) -> torch.Tensor:
    """``(N, 2, 2)`` rotation matrices for angles in degrees."""
    radians = degrees * (math.pi / 180.0)
    cos, sin = radians.cos(), radians.sin()
    return torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)


def shear(amount: torch.Tensor, axis: int) -> torch.Tensor:
    """``(N, 2, 2)`` shear matrices: ``x += amount * y`` (axis 0) or ``y += amount * x``."""
    matrices = torch.eye(2, dtype=amount.dtype, device=amount.device).repeat(len(amount), 1, 1)
    matrices[:, axis, 1 - axis] = amount
    return matrices


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """Luma ``(N, 1, H, W)`` of RGB images (1-channel images are returned as they are)."""
    if images.shape[1] == 1:
        return images
    return _torchvision_functional().rgb_to_grayscale(images)


def blend(images: torch.Tensor, other: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """``factor * images + (1 - factor) * other`` per sample, clamped to [0, 1]."""
    factor = _per_sample(factors)
    return (factor * images + (1 - factor) * other).clamp(0, 1)


def adjust_brightness(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Scales each image by its factor (0 black, 1 unchanged)."""
    return blend(images, torch.zeros_like(images), factors)


def adjust_contrast(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Blends each image with its mean gray level (0 flat gray, 1 unchanged)."""
    mean = grayscale(images).mean(dim=(1, 2, 3), keepdim=True)
    return blend(images, mean.expand_as(images), factors)


def adjust_saturation(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Blends each RGB image with its grayscale version (0 gray, 1 unchanged)."""
    if images.shape[1] != 3:
        return images
    return blend(images, grayscale(images).expand_as(images), factors)


def rotate_hue(images: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Rotates each RGB image's hue by its shift (in turns, -0.5 to 0.5), in YIQ space."""
    if images.shape[1] != 3:
        return images
    to_yiq = device_constant(_RGB_TO_YIQ, images)
    from_yiq = device_constant(_yiq_to_rgb(images.dtype), images)
    angle = shifts * (2 * math.pi)
    cos, sin = angle.cos(), angle.sin()
    one, zero = torch.ones_like(cos), torch.zeros_like(cos)
    spin = torch.stack(
        [
            torch.stack([one, zero, zero], -1),
            torch.stack([zero, cos, -sin], -1),
            torch.stack([zero, sin, cos], -1),
        ],
        -2,
    )
    transform = from_yiq @ spin @ to_yiq
    return torch.einsum("nij,njhw->nihw", transform, images).clamp(0, 1)


def adjust_sharpness(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Blends each image with a smoothed copy (0 smooth, 1 unchanged, 2 sharper); the
    border pixels keep their values, as in torchvision."""
    channels = images.shape[1]
    if min(images.shape[-2:]) < 3:
        return images  # every pixel is a border pixel
    # Ones with a 5 in the middle, built without writing a scalar into a device tensor
    # (which makes the host wait); the weights sum to 13.
    centre = F.pad(images.new_full((1, 1), 4.0), (1, 1, 1, 1))
    kernel = ((images.new_ones(3, 3) + centre) / 13.0).expand(channels, 1, 3, 3)
    smooth = images.clone()
    smooth[..., 1:-1, 1:-1] = F.conv2d(images, kernel, groups=channels)
    return blend(images, smooth, factors)


def posterize(images: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """Keeps ``bits`` (1 to 8) bits of each pixel value, per sample."""
    levels = _per_sample(2.0 ** bits.to(images.dtype))
    return (images * levels).floor().clamp(max=levels - 1) / levels


def solarize(images: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """Inverts the pixels at or above each image's threshold."""
    return torch.where(images >= _per_sample(thresholds), 1 - images, images)


@functools.cache
def _yiq_to_rgb(dtype: torch.dtype) -> tuple[tuple[float, ...], ...]:
    """The inverse of ``_RGB_TO_YIQ``, computed on the CPU in ``dtype``."""
    inverse = torch.linalg.inv(torch.tensor(_RGB_TO_YIQ, dtype=dtype))
    return tuple(tuple(row) for row in inverse.tolist())


def autocontrast(images: torch.Tensor) -> torch.Tensor:
    """Stretches each channel of each image to the full [0, 1] range (a flat channel is
    left as it is).

    The same arithmetic as torchvision's ``autocontrast``, with ``torch.where`` in place of
    its boolean-mask assignments, which make the host wait for a GPU.
    """
    minimum = images.amin(dim=(-2, -1), keepdim=True)
    maximum = images.amax(dim=(-2, -1), keepdim=True)
    flat = maximum == minimum
    scale = torch.where(flat, 1.0, maximum - minimum)
    low = torch.where(flat, 0.0, minimum)
    return (images - low).div_(scale).clamp_(0, 1)


def equalize(images: torch.Tensor) -> torch.Tensor:
    """Equalizes the histogram of each channel of each image."""
    return _torchvision_functional().equalize(images)
