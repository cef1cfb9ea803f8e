"""``cnn_rnn``: conv features, then a GRU or LSTM over the feature map's columns."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from automl.models.base import MODELS, InputShape, classifier
from automl.models.cnn import MAX_WIDTH, WIDTH_DESCRIPTION, conv_block
from automl.models.rnn import RecurrentOptions, SequenceReader

MAX_ROWS = 4
"""The feature map's height is average-pooled to at most this many rows."""


class CnnRnnOptions(RecurrentOptions):
    """Options of ``cnn_rnn``: its conv blocks and its recurrent part."""

    width: int = Field(32, ge=1, le=MAX_WIDTH, description=WIDTH_DESCRIPTION)
    depth: int = Field(2, ge=1, le=8, description="Number of conv blocks.")


class ColumnReader(nn.Module):
    """Reads a feature map ``(N, C, H, W)`` as ``W`` steps, left to right, each the column's
    ``C * min(H, MAX_ROWS)`` values (the height average-pooled)."""

    def __init__(self, channels: int, height: int, opts: RecurrentOptions) -> None:
        super().__init__()
        self.rows = min(height, MAX_ROWS)
        self.reader = SequenceReader(channels * self.rows, opts)
        self.out_features = self.reader.out_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Features ``(N, out_features)`` of a feature map."""
        # A constant width: ONNX exports adaptive pooling only to a constant output size.
        pooled = F.adaptive_avg_pool2d(features, (self.rows, int(features.shape[-1])))
        n, channels, rows, width = pooled.shape
        columns = pooled.permute(0, 3, 1, 2).reshape(n, width, channels * rows)
        return self.reader(columns)


@MODELS.register("cnn_rnn", options=CnnRnnOptions)
def build_cnn_rnn(opts: CnnRnnOptions, input_shape: InputShape, num_classes: int) -> nn.Module:
    """Conv blocks (as in ``cnn``), then a GRU or LSTM over the feature map's columns."""
    channels, height, width = input_shape[-3:]
    blocks: list[nn.Module] = []
    in_channels, size = channels, min(height, width)
    for index in range(opts.depth):
        out_channels = min(opts.width * 2**index, MAX_WIDTH)
        pool = size >= 4
        blocks.append(conv_block(in_channels, out_channels, 3, pooling="max" if pool else None))
        in_channels = out_channels
        if pool:
            size, height = size // 2, height // 2
    reader = ColumnReader(in_channels, height, opts)
    return nn.Sequential(
        nn.Sequential(*blocks, reader), classifier(reader.out_features, num_classes, opts.dropout)
    )
