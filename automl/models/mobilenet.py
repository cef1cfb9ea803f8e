"""torchvision MobileNetV3 (small and large), with a stem sized to the images."""

from __future__ import annotations

from pydantic import Field
from torch import nn

from automl.models.adapt import ShortStemStride, adapt_stem, detach_classifier
from automl.models.base import MODELS, InputShape, classifier
from automl.models.transfer import TransferOptions
from automl.registry import EntryOptions


class _MobileNetOptionsOwn(EntryOptions):
    """Options of the torchvision MobileNetV3s."""

    width_mult: float = Field(
        1.0, ge=0.1, le=4, description="Multiplies every layer's channels (torchvision's)."
    )
    stem_stride: ShortStemStride = Field(
        "auto",
        description="Stride of the first conv: 1 or 2 (torchvision's); auto: 1 below 64 px.",
    )
    dropout: float = Field(0.2, ge=0, lt=1, description="Dropout before the classifier.")


class MobileNetOptions(TransferOptions, _MobileNetOptionsOwn):
    """Options of the architecture: its own, then the transfer-learning ones."""


def build_mobilenet(
    arch: str, opts: MobileNetOptions, input_shape: InputShape, num_classes: int
) -> nn.Module:
    """Builds torchvision's ``arch`` (weights=None) with its stem adapted to the input."""
    from torchvision import models

    net = getattr(models, arch)(
        weights=None, num_classes=num_classes, width_mult=opts.width_mult, dropout=opts.dropout
    )
    adapt_stem(net.features, opts.stem_stride, input_shape)
    features = detach_classifier(net)
    return nn.Sequential(net, classifier(features, num_classes))


@MODELS.register("mobilenet_v3_small", options=MobileNetOptions)
def build_mobilenet_v3_small(
    opts: MobileNetOptions, input_shape: InputShape, num_classes: int
) -> nn.Module:
    """torchvision MobileNetV3-Small (1.5M params at width 1), for fast inference."""
    return build_mobilenet("mobilenet_v3_small", opts, input_shape, num_classes)


@MODELS.register("mobilenet_v3_large", options=MobileNetOptions)
def build_mobilenet_v3_large(
    opts: MobileNetOptions, input_shape: InputShape, num_classes: int
) -> nn.Module:
    """torchvision MobileNetV3-Large (4.2M params at width 1)."""
    return build_mobilenet("mobilenet_v3_large", opts, input_shape, num_classes)
