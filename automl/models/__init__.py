"""Architectures, registered by name, each with its own options."""

from automl.models import cnn as _cnn  # noqa: F401  (registers "cnn")
from automl.models.base import MODELS, InputShape, ModelFactory, build_model

__all__ = ["MODELS", "InputShape", "ModelFactory", "build_model"]
