"""``rnn``: a GRU or LSTM that reads an image row by row."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from automl.models.base import MODELS, InputShape, classifier
from automl.registry import EntryOptions


class RecurrentOptions(EntryOptions):
    """Options of the recurrent part of ``rnn`` and ``cnn_rnn``."""

    cell: Literal["gru", "lstm"] = Field("gru", description="Recurrent cell.")
    hidden: int = Field(128, ge=1, le=2048, description="Hidden units per direction.")
    layers: int = Field(1, ge=1, le=4, description="Stacked recurrent layers.")
    bidirectional: bool = Field(False, description="Read the sequence both ways.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout before the classifier.")


class SequenceReader(nn.Module):
    """Runs a GRU or LSTM over ``(N, T, F)`` and returns the last layer's final hidden
    state, both directions concatenated: ``(N, out_features)``."""

    def __init__(self, in_features: int, opts: RecurrentOptions) -> None:
        super().__init__()
        cell = nn.GRU if opts.cell == "gru" else nn.LSTM
        self.rnn = cell(
            in_features,
            opts.hidden,
            num_layers=opts.layers,
            batch_first=True,
            bidirectional=opts.bidirectional,
        )
        self.directions = 2 if opts.bidirectional else 1
        self.out_features = opts.hidden * self.directions

    def forward(self, sequence: torch.Tensor) -> torch.Tensor:
        """Reads ``(N, T, F)`` into ``(N, out_features)``."""
        if sequence.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            # oneDNN has no LSTM for float32 input under bfloat16 autocast on CPUs without
            # native bfloat16; it has one for bfloat16 input (what a conv in front gives).
            sequence = sequence.to(torch.get_autocast_dtype("cpu"))
        _, state = self.rnn(sequence)
        hidden = state[0] if isinstance(state, tuple) else state  # an LSTM also returns c
        last_layer = hidden[-self.directions :]  # (directions, N, hidden)
        return last_layer.transpose(0, 1).reshape(sequence.shape[0], self.out_features)


class RowReader(nn.Module):
    """Reads images ``(N, C, H, W)`` as ``H`` steps of ``C * W`` values, top to bottom."""

    def __init__(self, channels: int, width: int, opts: RecurrentOptions) -> None:
        super().__init__()
        self.reader = SequenceReader(channels * width, opts)
        self.out_features = self.reader.out_features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Features ``(N, out_features)`` of a batch of images."""
        n, channels, height, width = images.shape
        rows = images.permute(0, 2, 1, 3).reshape(n, height, channels * width)
        return self.reader(rows)


@MODELS.register("rnn", options=RecurrentOptions)
def build_rnn(opts: RecurrentOptions, input_shape: InputShape, num_classes: int) -> nn.Module:
    """A GRU or LSTM reading the image row by row; its last hidden state is classified."""
    channels, _, width = input_shape[-3:]
    reader = RowReader(channels, width, opts)
    return nn.Sequential(
        nn.Sequential(reader), classifier(reader.out_features, num_classes, opts.dropout)
    )
