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
        CheckpointError: If the pretrained checkpoint cannot be read or fits none of the
            backbone.
    """
    return build_model_with_report(name, options, input_shape, num_classes)[0]


def build_model_with_report(
    name: str,
    options: Mapping[str, Any] | EntryOptions | None,
    input_shape: InputShape,
    num_classes: int,
) -> tuple[nn.Module, dict[str, str]]:
    """``build_model``, and notes for the trial on what its transfer options did
    (``apply_transfer``: the pretrained load, a ``freeze_k`` cut to the model's stages).

    Raises:
        UnknownNameError: If ``name`` is not registered.
        pydantic.ValidationError: If the options do not fit the architecture.
        CheckpointError: If the pretrained checkpoint cannot be read or fits none of the
            backbone.
    """
    entry = MODELS.get(name)
    parsed = options if isinstance(options, entry.options) else entry.parse_options(options)  # type: ignore[arg-type]
    made = entry.factory(parsed, tuple(input_shape), num_classes)
    model = MODELS.made(entry, made, nn.Module, "a torch.nn.Module")
    notes = apply_transfer(model, parsed) if isinstance(parsed, TransferOptions) else {}
    return model, notes
