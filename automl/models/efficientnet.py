"""torchvision EfficientNet-B0, with a stem sized to the images."""

from __future__ import annotations

from pydantic import Field
from torch import nn

from automl.models.adapt import ShortStemStride, adapt_stem, detach_classifier
from automl.models.base import MODELS, InputShape, classifier
from automl.models.transfer import TransferOptions
from automl.registry import EntryOptions


class _EfficientNetOptionsOwn(EntryOptions):
    """Options of the torchvision EfficientNet."""

    stem_stride: ShortStemStride = Field(
        "auto",
        description="Stride of the first conv: 1 or 2 (torchvision's); auto: 1 below 64 px.",
    )
    dropout: float = Field(0.2, ge=0, lt=1, description="Dropout before the classifier.")
    stochastic_depth: float = Field(
        0.2, ge=0, lt=1, description="Largest chance of skipping a block (grows with depth)."
    )


class EfficientNetOptions(TransferOptions, _EfficientNetOptionsOwn):
    """Options of the architecture: its own, then the transfer-learning ones."""


@MODELS.register("efficientnet_b0", options=EfficientNetOptions)
def build_efficientnet_b0(
    opts: EfficientNetOptions, input_shape: InputShape, num_classes: int
) -> nn.Module:
    """torchvision EfficientNet-B0 (4M params), stem adapted to small and 1-channel images."""
    from torchvision import models

    net = models.efficientnet_b0(
        weights=None,
        num_classes=num_classes,
        dropout=opts.dropout,
        stochastic_depth_prob=opts.stochastic_depth,
    )
    adapt_stem(net.features, opts.stem_stride, input_shape)
    features = detach_classifier(net)
    return nn.Sequential(net, classifier(features, num_classes))
