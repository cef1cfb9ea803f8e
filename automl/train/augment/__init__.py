"""Data augmentation on batches on the device, registered by name with their options.

Every augmentation draws its randomness per sample from a ``torch.Generator`` on the
batch's device (no per-sample Python), runs when its ``p`` is above zero, and keeps the
images' shape, dtype and device. Validation and test data are never augmented.
"""

from automl.train.augment import color as _color  # noqa: F401  (each import registers)
from automl.train.augment import erasing as _erasing  # noqa: F401
from automl.train.augment import geometric as _geometric  # noqa: F401
from automl.train.augment import mixing as _mixing  # noqa: F401
from automl.train.augment import policies as _policies  # noqa: F401
from automl.train.augment.base import (
    AUGMENTATIONS,
    PIPELINE_ORDER,
    Augment,
    AugmentFactory,
    AugmentOptions,
    build_pipeline,
    sample_mask,
)

__all__ = [
    "AUGMENTATIONS",
    "PIPELINE_ORDER",
    "Augment",
    "AugmentFactory",
    "AugmentOptions",
    "build_pipeline",
    "sample_mask",
]
