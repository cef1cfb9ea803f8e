"""Adapting torchvision networks to small images, any channel count and our model shape."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from torch import nn

MIN_STEM_OUTPUT = 32
"""``auto`` stems keep at least this many pixels: below 64 px the image keeps full size."""

StemStride = Literal["auto", 1, 2, 4]
"""Stem choices of a network whose own stem downsamples 4x (ResNet)."""
ShortStemStride = Literal["auto", 1, 2]
"""Stem choices of a network whose own stem downsamples 2x (MobileNet, EfficientNet)."""


def stem_stride(choice: str | int, input_shape: Sequence[int], strides: Sequence[int]) -> int:
    """The stride of a network's stem for an input shape.

    Args:
        choice: A stride, or ``auto``: the largest of ``strides`` that leaves at least
            ``MIN_STEM_OUTPUT`` pixels on the shorter side (1 below 64 px).
        input_shape: ``(..., C, H, W)``.
        strides: The strides the network offers, ascending; the last is torchvision's own.
    """
    if choice != "auto":
        return int(choice)
    size = min(input_shape[-2:])
    fitting = [stride for stride in strides if size // stride >= MIN_STEM_OUTPUT]
    return max(fitting, default=strides[0])


def replace_conv(
    conv: nn.Conv2d, *, in_channels: int, stride: int, kernel_size: int | None = None
) -> nn.Conv2d:
    """A freshly initialized copy of ``conv`` with other input channels, stride or kernel.

    Padding keeps "same" geometry (``kernel_size // 2``); the weights are initialized as
    torchvision initializes its convs (Kaiming normal, fan out).
    """
    kernel = kernel_size or conv.kernel_size[0]
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        kernel,
        stride=stride,
        padding=kernel // 2,
        bias=conv.bias is not None,
    )
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    if new.bias is not None:
        nn.init.zeros_(new.bias)
    return new


def detach_classifier(net: nn.Module) -> int:
    """Replaces the last ``nn.Linear`` of ``net`` by ``nn.Identity``, in place.

    Returns:
        The features that layer took, which ``net`` now outputs.

    Raises:
        ValueError: If ``net`` has no linear layer.
    """
    last: tuple[str, nn.Linear] | None = None
    for name, module in net.named_modules():
        if isinstance(module, nn.Linear):
            last = (name, module)
    if last is None:
        raise ValueError(f"{type(net).__name__} has no nn.Linear classifier")
    name, layer = last
    parent_name, _, attribute = name.rpartition(".")
    setattr(net.get_submodule(parent_name), attribute, nn.Identity())
    return layer.in_features


def adapt_stem(
    features: nn.Sequential, choice: ShortStemStride, input_shape: Sequence[int]
) -> None:
    """Replaces the stem conv of a MobileNet or EfficientNet (``features[0][0]``), in place,
    for the input's channels and size."""
    stem = features[0][0]
    stride = stem_stride(choice, input_shape, (1, 2))
    channels = input_shape[-3]
    if stride != stem.stride[0] or channels != stem.in_channels:
        features[0][0] = replace_conv(stem, in_channels=channels, stride=stride)
