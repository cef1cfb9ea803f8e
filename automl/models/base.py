"""The model registry: an architecture is one factory function."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from torch import nn

from automl.registry import Registry

if TYPE_CHECKING:
    from automl.train.config import TrialConfig


class ModelFactory(Protocol):
    """Builds a network for ``num_classes`` outputs from images shaped ``input_shape``."""

    def __call__(
        self, config: TrialConfig, input_shape: tuple[int, int, int], num_classes: int
    ) -> nn.Module: ...


MODELS: Registry[ModelFactory] = Registry("model")


def build_model(
    config: TrialConfig, input_shape: tuple[int, int, int], num_classes: int
) -> nn.Module:
    """Builds the model named by ``config.model``."""
    return MODELS.get(config.model)(config, input_shape, num_classes)
