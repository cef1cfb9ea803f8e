"""Architectures, registered by name, each with its own options (one file each)."""

from automl.models import cnn as _cnn  # noqa: F401  (each import registers its entries)
from automl.models import cnn_rnn as _cnn_rnn  # noqa: F401
from automl.models import efficientnet as _efficientnet  # noqa: F401
from automl.models import fast_resnet as _fast_resnet  # noqa: F401
from automl.models import frame_rnn as _frame_rnn  # noqa: F401  (frame_rnn, frame_pool)
from automl.models import mobilenet as _mobilenet  # noqa: F401
from automl.models import resnet as _resnet  # noqa: F401
from automl.models import rnn as _rnn  # noqa: F401
from automl.models.base import MODELS, InputShape, ModelFactory, backbone_stages, head_keys
from automl.models.build import build_model, build_model_with_report

__all__ = [
    "MODELS",
    "InputShape",
    "ModelFactory",
    "backbone_stages",
    "build_model",
    "build_model_with_report",
    "head_keys",
]
