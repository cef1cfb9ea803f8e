"""Architectures, registered by name, each with its own options."""

from automl.models import cnn as _cnn  # noqa: F401  (registers "cnn")
from automl.models import frame_rnn as _frame_rnn  # noqa: F401  (frame_rnn, frame_pool)
from automl.models.base import MODELS, InputShape, ModelFactory, build_model

__all__ = ["MODELS", "InputShape", "ModelFactory", "build_model"]
