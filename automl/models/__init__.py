"""Architectures, registered by name."""

from automl.models import cnn as _cnn  # noqa: F401  (registers "cnn")
from automl.models import frame_rnn as _frame_rnn  # noqa: F401  (frame_gru, frame_lstm, frame_pool)
from automl.models.base import MODELS, ModelFactory, build_model

__all__ = ["MODELS", "ModelFactory", "build_model"]
