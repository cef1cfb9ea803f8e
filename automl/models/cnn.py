"""A small configurable CNN: ``depth`` conv blocks, widths doubling from ``width`` up to
``MAX_WIDTH``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import nn

from automl.models.base import MODELS, InputShape, classifier
from automl.models.transfer import TransferOptions
from automl.registry import EntryOptions

MAX_WIDTH = 512
"""The most channels a conv block of ``cnn`` or ``cnn_rnn`` has: later blocks stop doubling."""

WIDTH_DESCRIPTION = (
    f"Channels of the first conv block; each later block doubles them, up to {MAX_WIDTH}."
)


class _CnnShape(EntryOptions):
    """The ``cnn`` architecture's own options (listed before the transfer ones)."""

    width: int = Field(32, ge=1, le=MAX_WIDTH, description=WIDTH_DESCRIPTION)
    depth: int = Field(2, ge=1, le=8, description="Number of conv blocks.")
    kernel_size: int = Field(3, ge=1, le=11, description="Side of each conv kernel.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout before the classifier.")
    batch_norm: bool = Field(True, description="Batch norm after every conv.")
    pooling: Literal["max", "avg"] = Field("max", description="2x2 pooling after each block.")


class CnnOptions(TransferOptions, _CnnShape):
    """Options of the ``cnn`` architecture."""


def conv_block(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    *,
    batch_norm: bool = True,
    pooling: str | None = "max",
) -> nn.Sequential:
    """Conv -> (BatchNorm) -> ReLU, then a 2x2 max- or average-pool unless ``pooling`` is None."""
    layers: list[nn.Module] = [
        nn.Conv2d(
            in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=not batch_norm
        )
    ]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_channels))
    layers.append(nn.ReLU(inplace=True))
    if pooling == "max":
        layers.append(nn.MaxPool2d(2))
    elif pooling == "avg":
        layers.append(nn.AvgPool2d(2))
    return nn.Sequential(*layers)


@MODELS.register("cnn", options=CnnOptions)
def build_cnn(opts: CnnOptions, input_shape: InputShape, num_classes: int) -> nn.Module:
    """A small configurable CNN: conv blocks doubling in width up to 512, global pooling, head.

    Each block halves the spatial size while it is at least 4 pixels, so the same builder
    fits 8x8 digits and 224x224 photos.
    """
    channels, height, width = input_shape[-3:]
    blocks: list[nn.Module] = []
    in_channels, size = channels, min(height, width)
    for index in range(opts.depth):
        out_channels = min(opts.width * 2**index, MAX_WIDTH)
        pool = size >= 4
        blocks.append(
            conv_block(
                in_channels,
                out_channels,
                opts.kernel_size,
                batch_norm=opts.batch_norm,
                pooling=opts.pooling if pool else None,
            )
        )
        in_channels, size = out_channels, size // 2 if pool else size
    backbone = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return nn.Sequential(backbone, classifier(in_channels, num_classes, opts.dropout))
