"""A small configurable CNN: ``depth`` conv blocks, widths doubling from ``width``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from automl.models.base import MODELS

if TYPE_CHECKING:
    from automl.train.config import TrialConfig

MAX_WIDTH = 512


def conv_block(in_channels: int, out_channels: int, kernel_size: int, pool: bool) -> nn.Sequential:
    """Conv -> BatchNorm -> ReLU, then a 2x2 max-pool when ``pool``."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


@MODELS.register("cnn")
def build_cnn(
    config: TrialConfig, input_shape: tuple[int, int, int], num_classes: int
) -> nn.Module:
    """Builds the CNN from ``width``, ``depth``, ``kernel_size`` and ``dropout``.

    Each block halves the spatial size while it is at least 4 pixels, so the same
    builder fits 8x8 digits and 224x224 photos.
    """
    channels, height, width = input_shape
    blocks: list[nn.Module] = []
    in_channels, size = channels, min(height, width)
    for index in range(config.depth):
        out_channels = min(config.width * 2**index, MAX_WIDTH)
        pool = size >= 4
        blocks.append(conv_block(in_channels, out_channels, config.kernel_size, pool))
        in_channels, size = out_channels, size // 2 if pool else size
    return nn.Sequential(
        *blocks,
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(config.dropout),
        nn.Linear(in_channels, num_classes),
    )
