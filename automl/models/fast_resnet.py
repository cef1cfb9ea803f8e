"""A fast residual net for small images, in the spirit of airbench and ResNet-9.

A 3x3 stem conv, then three groups; each group doubles the channels with a conv, halves
the image with a 2x2 max-pool, and adds ``blocks`` residual blocks. Global max-pooling
and a linear layer classify. Few layers, wide convs, batch norm everywhere: it trains to
high accuracy on 32x32 images in a few epochs.
"""

from __future__ import annotations

import itertools

import torch
from pydantic import Field
from torch import nn

from automl.models.base import MODELS, InputShape, classifier
from automl.registry import EntryOptions

BASE_WIDTHS = (64, 128, 256, 512)
"""Channels of the stem and the three groups at ``width_mult`` 1."""


class FastResNetOptions(EntryOptions):
    """Options of ``fast_resnet``."""

    width_mult: float = Field(
        0.5, ge=0.05, le=4, description="Multiplies the widths 64 (stem), 128, 256, 512."
    )
    blocks: int = Field(1, ge=0, le=4, description="Residual blocks in each group.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout before the classifier.")


def conv_bn(in_channels: int, out_channels: int) -> list[nn.Module]:
    """3x3 conv (no bias), batch norm, ReLU."""
    return [
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


class Residual(nn.Module):
    """``x + f(x)`` with ``f`` two conv-bn-relu layers of constant width."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*conv_bn(channels, channels), *conv_bn(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Adds the residual branch to its input."""
        return x + self.body(x)


def group(in_channels: int, out_channels: int, blocks: int, pool: bool) -> nn.Sequential:
    """Conv to ``out_channels``, 2x2 max-pool (when ``pool``), then residual blocks."""
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
    layers: list[nn.Module] = [conv, nn.MaxPool2d(2)] if pool else [conv]
    layers += [nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]
    layers += [Residual(out_channels) for _ in range(blocks)]
    return nn.Sequential(*layers)


@MODELS.register("fast_resnet", options=FastResNetOptions)
def build_fast_resnet(
    opts: FastResNetOptions, input_shape: InputShape, num_classes: int
) -> nn.Module:
    """Fast residual net for 32x32 images (airbench-style): 3 conv groups, residual blocks."""
    channels, height, width = input_shape[-3:]
    widths = [max(1, round(base * opts.width_mult)) for base in BASE_WIDTHS]
    stages: list[nn.Module] = [nn.Sequential(*conv_bn(channels, widths[0]))]
    size = min(height, width)
    for in_channels, out_channels in itertools.pairwise(widths):
        pool = size >= 2
        stages.append(group(in_channels, out_channels, opts.blocks, pool))
        size = size // 2 if pool else size
    backbone = nn.Sequential(*stages, nn.AdaptiveMaxPool2d(1), nn.Flatten())
    return nn.Sequential(backbone, classifier(widths[-1], num_classes, opts.dropout))
