"""Imbalanced-data strategies, registered by name with their options.

A strategy looks at the training split and returns an ``ImbalancePlan``: per-class loss
weights, a per-epoch sampling of training indices, and synthetic samples to add.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from automl.registry import EntryOptions, Registry

EpochSampler = Callable[[int, torch.Generator], torch.Tensor]
"""``sample(epoch, generator) -> indices`` of the training samples of one epoch."""


@dataclass(frozen=True)
class TrainSplit:
    """What a strategy may look at: the training split only, never validation or test."""

    images: torch.Tensor
    """uint8 images ``(N, ...)``."""
    labels: torch.Tensor
    """int64 labels ``(N,)``."""
    num_classes: int
    seed: int


@dataclass(frozen=True)
class ImbalancePlan:
    """How training compensates for rare classes."""

    class_weights: torch.Tensor | None = None
    """Per-class loss weights ``(num_classes,)``, or None for unweighted."""
    sampler: EpochSampler | None = None
    """Indices of each epoch, or None for a plain shuffle of every sample."""
    epoch_size: int | None = None
    """Samples per epoch that ``sampler`` draws (required with a sampler)."""
    extra_images: torch.Tensor | None = None
    """Synthetic uint8 samples added to the training split."""
    extra_labels: torch.Tensor | None = None


class ImbalanceFactory(Protocol):
    """Builds the plan of a strategy for a training split."""

    def __call__(self, options: Any, split: TrainSplit) -> ImbalancePlan: ...


IMBALANCE: Registry[ImbalanceFactory] = Registry("imbalance strategy", group="automl.imbalance")


@IMBALANCE.register("none")
def no_strategy(opts: EntryOptions, split: TrainSplit) -> ImbalancePlan:
    """Train on the data as it is."""
    return ImbalancePlan()


def build_imbalance_plan(name: str, options: Mapping[str, Any], split: TrainSplit) -> ImbalancePlan:
    """Builds the plan of the strategy ``name`` with its ``options``."""
    entry = IMBALANCE.get(name)
    return entry.factory(entry.parse_options(options), split)
