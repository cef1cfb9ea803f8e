"""Sequence models for clips ``(N, T, C, H, W)``: a small CNN per frame, then time.

``frame_rnn`` runs a GRU or LSTM over the per-frame features and classifies from its last
state, so it sees frame order. ``frame_pool`` averages the per-frame features: it is blind
to order (a baseline, or for clips where order carries no information). The per-frame CNN
is the ``cnn`` model's blocks (``width``, ``depth``, ``kernel_size``).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from automl.models.base import MODELS, InputShape, classifier
from automl.models.cnn import MAX_WIDTH, conv_block
from automl.registry import EntryOptions

Temporal = Literal["gru", "lstm", "mean"]
GRID = 4
"""Per-frame feature maps are pooled to ``GRID x GRID`` cells before the time model."""


class FrameSequenceEncoder(nn.Module):
    """Per-frame CNN features, combined over time by a GRU, an LSTM or a mean.

    The backbone of the frame-sequence models: maps clips ``(N, T, C, H, W)`` to features.

    Args:
        frame_encoder: Maps ``(B, C, H, W)`` to ``(B, features)``.
        features: Size of a frame's feature vector.
        temporal: ``gru``, ``lstm`` or ``mean`` (order-blind).
        hidden: Units of the recurrent layer.
    """

    def __init__(
        self, frame_encoder: nn.Module, features: int, temporal: Temporal, hidden: int
    ) -> None:
        super().__init__()
        self.frame_encoder = frame_encoder
        rnn = {"gru": nn.GRU, "lstm": nn.LSTM}.get(temporal)
        self.rnn = rnn(features, hidden, batch_first=True) if rnn is not None else None
        self.out_features = hidden if self.rnn is not None else features

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        """Returns features ``(N, out_features)`` for clips ``(N, T, C, H, W)``."""
        batch, steps = clips.shape[:2]
        frames = self.frame_encoder(clips.flatten(0, 1)).view(batch, steps, -1)
        if self.rnn is None:
            return frames.mean(dim=1)
        outputs, _ = self.rnn(frames)
        return outputs[:, -1]


def frame_encoder(
    channels: int, size: int, width: int, depth: int, kernel_size: int
) -> tuple[nn.Module, int]:
    """The ``cnn`` model's conv blocks, pooled to a ``GRID x GRID`` map and flattened.

    Unlike global pooling, the small grid keeps where things are in the frame, which is
    what motion is made of. Returns ``(encoder, features)``.
    """
    blocks: list[nn.Module] = []
    in_channels = channels
    for index in range(depth):
        out_channels = min(width * 2**index, MAX_WIDTH)
        pool = size >= 4
        blocks.append(
            conv_block(in_channels, out_channels, kernel_size, pooling="max" if pool else None)
        )
        in_channels, size = out_channels, size // 2 if pool else size
    encoder = nn.Sequential(*blocks, GridPool(GRID), nn.Flatten())
    return encoder, in_channels * GRID * GRID


class GridPool(nn.AdaptiveAvgPool2d):
    """``nn.AdaptiveAvgPool2d(grid)`` that also exports to ONNX behind a dynamic batch.

    The legacy ONNX exporter needs the input's spatial size for adaptive pooling, and loses
    it once the frames of a clip are folded into the batch. A frame's size is fixed for a
    model, so the export averages each cell of the grid (PyTorch's own cell bounds) with
    the size read as constants.
    """

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Averages ``features (B, C, H, W)`` over each cell of the grid."""
        if not torch.onnx.is_in_onnx_export():
            return super().forward(features)
        height, width = (int(side) for side in features.shape[-2:])
        rows, cols = _cells(height, GRID), _cells(width, GRID)
        return torch.stack(
            [
                torch.stack(
                    [features[:, :, top:bottom, left:right].mean((2, 3)) for left, right in cols],
                    dim=-1,
                )
                for top, bottom in rows
            ],
            dim=-2,
        )


def _cells(size: int, cells: int) -> list[tuple[int, int]]:
    """Start and end of each of ``cells`` adaptive-pooling windows over ``size``."""
    return [(i * size // cells, -(-(i + 1) * size // cells)) for i in range(cells)]


class FramePoolOptions(EntryOptions):
    """Options of ``frame_pool``."""

    SAMPLES: ClassVar[frozenset[str] | None] = frozenset({"clips"})

    width: int = Field(16, ge=1, le=256, description="Channels of the first conv block.")
    depth: int = Field(2, ge=1, le=6, description="Conv blocks per frame.")
    kernel_size: int = Field(3, ge=1, le=7, description="Side of each conv kernel.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout before the classifier.")


class FrameRnnOptions(FramePoolOptions):
    """Options of ``frame_rnn``."""

    cell: Literal["gru", "lstm"] = Field("gru", description="Recurrent cell over time.")
    hidden: int = Field(32, ge=1, le=1024, description="Units of the recurrent layer.")


def _clip_shape(name: str, input_shape: InputShape) -> tuple[int, int]:
    if len(input_shape) != 4:
        raise ValueError(
            f"model {name!r} needs clips (T, C, H, W), e.g. from frame_sequences; "
            f"got samples shaped {tuple(input_shape)}"
        )
    _, channels, height, width = input_shape
    return channels, min(height, width)


@MODELS.register("frame_rnn", options=FrameRnnOptions)
def build_frame_rnn(opts: FrameRnnOptions, input_shape: InputShape, num_classes: int) -> nn.Module:
    """Per-frame CNN, then a GRU or LSTM over time (for frame_sequences)."""
    channels, size = _clip_shape("frame_rnn", input_shape)
    encoder, features = frame_encoder(channels, size, opts.width, opts.depth, opts.kernel_size)
    backbone = FrameSequenceEncoder(encoder, features, opts.cell, opts.hidden)
    return nn.Sequential(backbone, classifier(backbone.out_features, num_classes, opts.dropout))


@MODELS.register("frame_pool", options=FramePoolOptions)
def build_frame_pool(
    opts: FramePoolOptions, input_shape: InputShape, num_classes: int
) -> nn.Module:
    """Per-frame CNN averaged over time: blind to frame order (a baseline)."""
    channels, size = _clip_shape("frame_pool", input_shape)
    encoder, features = frame_encoder(channels, size, opts.width, opts.depth, opts.kernel_size)
    backbone = FrameSequenceEncoder(encoder, features, "mean", features)
    return nn.Sequential(backbone, classifier(backbone.out_features, num_classes, opts.dropout))
