"""Building a registered architecture, pretrained weights and frozen stages included."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from automl.models.base import MODELS, InputShape
from automl.models.transfer import TransferOptions, apply_transfer
from automl.registry import EntryOptions


def build_model(
    name: str,
    options: Mapping[str, Any] | EntryOptions | None,
    input_shape: InputShape,
    num_classes: int,
) -> nn.Module:
    """Builds the architecture ``name`` with its ``options`` for the data's shape and classes.

    An architecture whose options are ``TransferOptions`` then gets its pretrained
    weights and frozen stages.

    Raises:
        UnknownNameError: If ``name`` is not registered.
        pydantic.ValidationError: If the options do not fit the architecture.
        CheckpointError: If the pretrained checkpoint cannot be read.
    """
    entry = MODELS.get(name)
    parsed = options if isinstance(options, entry.options) else entry.parse_options(options)  # type: ignore[arg-type]
    model = entry.factory(parsed, tuple(input_shape), num_classes)
    if isinstance(parsed, TransferOptions):
        apply_transfer(model, parsed)
    return model
