"""torchvision ResNet-18 and ResNet-34, with a stem sized to the images."""

from __future__ import annotations

from pydantic import Field
from torch import nn

from automl.models.adapt import StemStride, detach_classifier, replace_conv, stem_stride
from automl.models.base import MODELS, InputShape, classifier
from automl.models.transfer import TransferOptions
from automl.registry import EntryOptions

SMALL_STEM_KERNEL = 3


class _ResNetOptionsOwn(EntryOptions):
    """Options of the torchvision ResNets."""

    stem_stride: StemStride = Field(
        "auto",
        description="Downsampling of the stem: 1 (3x3 conv, no max-pool), 2 (7x7 stride-2 "
        "conv, no max-pool), 4 (torchvision's stem); auto keeps >= 32 px after the stem.",
    )
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout before the classifier.")
    zero_init_residual: bool = Field(
        False, description="Start every residual branch at zero (last batch norm weight 0)."
    )


class ResNetOptions(TransferOptions, _ResNetOptionsOwn):
    """Options of the architecture: its own, then the transfer-learning ones."""


def build_resnet(
    arch: str, opts: ResNetOptions, input_shape: InputShape, num_classes: int
) -> nn.Module:
    """Builds torchvision's ``arch`` (weights=None) with its stem adapted to the input."""
    from torchvision import models

    net = getattr(models, arch)(
        weights=None, num_classes=num_classes, zero_init_residual=opts.zero_init_residual
    )
    channels = input_shape[-3]
    stride = stem_stride(opts.stem_stride, input_shape, (1, 2, 4))
    if stride == 1:
        net.conv1 = replace_conv(
            net.conv1, in_channels=channels, stride=1, kernel_size=SMALL_STEM_KERNEL
        )
    elif stride == 2 or channels != net.conv1.in_channels:
        net.conv1 = replace_conv(net.conv1, in_channels=channels, stride=2)
    if stride < 4:
        net.maxpool = nn.Identity()
    features = detach_classifier(net)
    return nn.Sequential(net, classifier(features, num_classes, opts.dropout))


@MODELS.register("resnet18", options=ResNetOptions)
def build_resnet18(opts: ResNetOptions, input_shape: InputShape, num_classes: int) -> nn.Module:
    """torchvision ResNet-18 (11M params), stem adapted to small and 1-channel images."""
    return build_resnet("resnet18", opts, input_shape, num_classes)


@MODELS.register("resnet34", options=ResNetOptions)
def build_resnet34(opts: ResNetOptions, input_shape: InputShape, num_classes: int) -> nn.Module:
    """torchvision ResNet-34 (21M params), stem adapted to small and 1-channel images."""
    return build_resnet("resnet34", opts, input_shape, num_classes)
