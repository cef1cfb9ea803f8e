"""Sequence models for clips ``(N, T, C, H, W)``: a small CNN per frame, then time.

``frame_gru`` and ``frame_lstm`` run a recurrent layer over the per-frame features and
classify from its last state, so they see frame order. ``frame_pool`` averages the
per-frame features: it is blind to order (a baseline, or for clips where order carries
no information). The per-frame CNN is the ``cnn`` model's blocks (``width``, ``depth``,
``kernel_size``); the recurrent layer has ``2 * width`` units.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

from automl.models.base import MODELS
from automl.models.cnn import MAX_WIDTH, conv_block

if TYPE_CHECKING:
    from automl.train.config import TrialConfig

Temporal = Literal["gru", "lstm", "mean"]
GRID = 4
"""Per-frame feature maps are pooled to ``GRID x GRID`` cells before the time model."""


class FrameSequenceClassifier(nn.Module):
    """Per-frame CNN features, combined over time by a GRU, an LSTM or a mean.

    Args:
        frame_encoder: Maps ``(B, C, H, W)`` to ``(B, features)``.
        features: Size of a frame's feature vector.
        num_classes: Outputs.
        temporal: ``gru``, ``lstm`` or ``mean`` (order-blind).
        hidden: Units of the recurrent layer.
        dropout: Before the classifier.
    """

    def __init__(
        self,
        frame_encoder: nn.Module,
        features: int,
        num_classes: int,
        temporal: Temporal,
        hidden: int,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.frame_encoder = frame_encoder
        self.temporal = temporal
        rnn = {"gru": nn.GRU, "lstm": nn.LSTM}.get(temporal)
        self.rnn = rnn(features, hidden, batch_first=True) if rnn is not None else None
        out = hidden if self.rnn is not None else features
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(out, num_classes)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        """Returns logits ``(N, num_classes)`` for clips ``(N, T, C, H, W)``."""
        batch, steps = clips.shape[:2]
        frames = self.frame_encoder(clips.flatten(0, 1)).view(batch, steps, -1)
        if self.rnn is None:
            summary = frames.mean(dim=1)
        else:
            outputs, _ = self.rnn(frames)
            summary = outputs[:, -1]
        return self.classifier(self.dropout(summary))


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
        blocks.append(conv_block(in_channels, out_channels, kernel_size, pool))
        in_channels, size = out_channels, size // 2 if pool else size
    encoder = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(GRID), nn.Flatten())
    return encoder, in_channels * GRID * GRID


def _builder(temporal: Temporal) -> Callable[[TrialConfig, tuple[int, ...], int], nn.Module]:
    def build(config: TrialConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        if len(input_shape) != 4:
            raise ValueError(
                f"model 'frame_{temporal if temporal != 'mean' else 'pool'}' needs clips "
                f"(T, C, H, W), e.g. from frame_sequences; got samples shaped {tuple(input_shape)}"
            )
        _, channels, height, width = input_shape
        encoder, features = frame_encoder(
            channels, min(height, width), config.width, config.depth, config.kernel_size
        )
        return FrameSequenceClassifier(
            encoder,
            features,
            num_classes,
            temporal,
            hidden=2 * config.width,
            dropout=config.dropout,
        )

    build.__doc__ = f"Per-frame CNN, then {temporal} over time."
    return build


MODELS.add("frame_gru", _builder("gru"))
MODELS.add("frame_lstm", _builder("lstm"))
MODELS.add("frame_pool", _builder("mean"))
