"""The model registry and the shape every built model has.

An architecture is one factory function plus its options model::

    @MODELS.register("cnn", options=CnnOptions)
    def build_cnn(opts: CnnOptions, input_shape: InputShape, num_classes: int) -> nn.Module: ...

**The model convention.** Every factory returns ``nn.Sequential(backbone, head)``:

- ``model[0]``, the *backbone*, maps images ``(N, C, H, W)`` to features. The torchvision
  families keep torchvision's module names inside it (``conv1``, ``layer1``, ``features``),
  with their last ``nn.Linear`` replaced by ``nn.Identity``, so a torchvision checkpoint's
  keys match ``model[0].state_dict()`` (minus that final layer) and load into it directly.
- ``model[1]``, the *head*, maps those features to ``num_classes`` logits and ends in an
  ``nn.Linear``; replacing ``model[1]`` (or its last layer) retargets the model to other
  classes. Pretrained weights never load into it (``head_keys``).
- ``backbone_stages(model)`` lists the backbone's stages, input side first, for freezing
  the first k of them (see its docstring for the rule).

Every factory builds for any channel count, any image size from 8 px up, and any number of
classes; none downsamples aggressively below 64 px.
"""

from __future__ import annotations

from typing import Any, Protocol

from torch import nn

from automl.registry import Registry

InputShape = tuple[int, ...]
"""Shape of one input: ``(C, H, W)`` for images, ``(T, C, H, W)`` for frame sequences."""


class ModelFactory(Protocol):
    """Builds ``nn.Sequential(backbone, head)`` for ``num_classes`` outputs from inputs
    shaped ``input_shape``."""

    def __call__(self, options: Any, input_shape: InputShape, num_classes: int) -> nn.Module: ...


MODELS: Registry[ModelFactory] = Registry("model", group="automl.models", qualifies=True)


def classifier(features: int, num_classes: int, dropout: float = 0.0) -> nn.Sequential:
    """The head of a model: optional dropout, then a linear layer to the logits."""
    layers: list[nn.Module] = [nn.Dropout(dropout)] if dropout > 0 else []
    return nn.Sequential(*layers, nn.Linear(features, num_classes))


def backbone_stages(model: nn.Module) -> list[nn.Module]:
    """The stages of a model's backbone (``model[0]``), input side first.

    A stage is a direct child of the backbone that holds parameters; a backbone with a
    ``features`` module (torchvision MobileNet, EfficientNet) contributes that module's
    children in its place. So ``cnn`` gives its conv blocks, a ResNet ``conv1``, ``bn1``
    and ``layer1`` to ``layer4``, a MobileNetV3 each block of ``features`` and then its
    pre-logits ``classifier``. The stages hold every backbone parameter, so freezing them
    all is freezing the backbone.

    Raises:
        ValueError: If ``model`` does not follow the convention (no backbone).
    """
    backbone = _backbone_and_head(model)[0]
    stages = []
    for name, child in backbone.named_children():
        if name == "features":
            stages += [block for block in child.children() if _has_parameters(block)]
        elif _has_parameters(child):
            stages.append(child)
    return stages


def head_keys(model: nn.Module) -> list[str]:
    """The state-dict keys of a model's head (``model[1]``), e.g. ``1.0.weight``.

    These are sized for the task's classes, so pretrained weights never replace them.

    Raises:
        ValueError: If ``model`` does not follow the convention.
    """
    head = _backbone_and_head(model)[1]
    return [f"1.{key}" for key in head.state_dict()]


def _backbone_and_head(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    if not isinstance(model, nn.Sequential) or len(model) != 2:
        raise ValueError(f"{type(model).__name__} is not nn.Sequential(backbone, head)")
    return model[0], model[1]


def _has_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())
