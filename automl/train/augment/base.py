"""The augmentation registry, the pipeline that chains entries, and random helpers.

Every augmentation takes a batch of float images in [0, 1] shaped ``(N, C, H, W)`` and
their targets, and draws its randomness per sample from a ``torch.Generator`` on the
batch's device, so there is no per-sample Python. It runs when its probability ``p`` is
above zero, on each sample with probability ``p``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import torch
from pydantic import Field

from automl.registry import AppliesWhen, EntryOptions, Registry

Augment = Callable[[torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]
"""``augment(images, targets, generator) -> (images, targets)``; targets are class indices
``(N,)`` or class probabilities ``(N, K)`` (mixing augmentations produce the latter). The
images keep their shape, dtype and device."""


class AugmentFactory(Protocol):
    """Builds an augmentation from its options for data with ``num_classes`` classes."""

    def __call__(self, options: Any, num_classes: int) -> Augment: ...


AUGMENTATIONS: Registry[AugmentFactory] = Registry(
    "augmentation", group="automl.augmentations", qualifies=True
)

PIPELINE_ORDER: list[str] = [
    "resized_crop",
    "pad_crop",
    "hflip",
    "affine",
    "randaugment",
    "trivialaugment",
    "color_jitter",
    "erasing",
    "mixup",
    "cutmix",
]
"""Order of the built-in augmentations (geometry, policies, color, erasing, mixing);
plugins' entries run after them, by name."""


class AugmentOptions(EntryOptions):
    """Base of every augmentation's options. Each option but ``p`` applies only where ``p``
    is above 0 (set on every subclass: a study searches or fixes them only there); a rule
    a subclass declares itself for an option replaces that one."""

    p: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Share of images it applies to; 0 is off (its other options then change "
        "nothing; a study leaves them out where p is searched as a categorical and comes "
        "out 0).",
    )

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        """Ties every option of the subclass to ``p`` before the rules are checked."""
        declared = cls.__dict__.get("APPLIES_WHEN", {})
        cls.APPLIES_WHEN = {
            name: declared.get(name, AppliesWhen("p", above=0, since=5))
            for name in cls.model_fields
            if name != "p"
        } | declared
        super().__pydantic_init_subclass__(**kwargs)


Constant = tuple[Any, ...]
"""A small constant as nested tuples of numbers or booleans."""


def device_constant(
    values: Constant, like: torch.Tensor, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """``values`` as a tensor on ``like``'s device, in ``dtype`` (default: ``like``'s).

    Made once per device and dtype: ``torch.tensor(..., device=...)`` on every call would
    make the host wait for the GPU each time. Callers must not modify the result.
    """
    return _device_constant(values, like.device, dtype or like.dtype)


@functools.lru_cache(maxsize=256)
def _device_constant(values: Constant, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    # Non-blocking from pageable memory: the driver stages the few bytes at once.
    return torch.tensor(values, dtype=dtype).to(device, non_blocking=True)


def sample_mask(n: int, p: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """A boolean ``(n,)`` mask, each element True with probability ``p``."""
    return torch.rand(n, generator=generator, device=device) < p


def uniform(
    n: int, low: float, high: float, generator: torch.Generator, like: torch.Tensor
) -> torch.Tensor:
    """``(n,)`` values uniform in ``[low, high)``, on ``like``'s device and dtype."""
    values = torch.rand(n, generator=generator, device=like.device, dtype=like.dtype)
    return low + (high - low) * values


def random_sign(n: int, generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """``(n,)`` values, each -1 or +1 with equal chance."""
    return torch.randint(0, 2, (n,), generator=generator, device=like.device).to(like.dtype) * 2 - 1


GAMMA_TRIES = 8
"""Candidates per sample in Marsaglia and Tsang's method; each is accepted with
probability above 0.95, so all eight fail with probability below 1e-10."""


def sample_gamma(
    concentration: float, n: int, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """``(n,)`` Gamma(concentration, 1) samples drawn from ``generator`` on ``device``.

    ``torch.distributions`` cannot take a generator, so this is Marsaglia and Tsang's
    method, vectorized (concentrations below 1 are boosted by ``U ** (1 / a)``).
    """
    boosted = concentration < 1
    a = concentration + 1 if boosted else concentration
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    x = torch.randn(n, GAMMA_TRIES, generator=generator, device=device)
    u = torch.rand(n, GAMMA_TRIES, generator=generator, device=device)
    v = (1 + c * x) ** 3
    safe_v = v.clamp(min=1e-12)
    accept = (v > 0) & (u.log() < 0.5 * x**2 + d - d * safe_v + d * safe_v.log())
    first = accept.to(torch.uint8).argmax(dim=1, keepdim=True)
    samples = (d * safe_v).gather(1, first).squeeze(1)
    if boosted:
        samples = samples * torch.rand(n, generator=generator, device=device) ** (1 / concentration)
    return samples


def sample_beta(
    alpha: float, n: int, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """``(n,)`` Beta(alpha, alpha) samples drawn from ``generator`` on ``device``."""
    tiny = torch.finfo(torch.float32).tiny
    x = sample_gamma(alpha, n, generator, device).clamp(min=tiny)
    y = sample_gamma(alpha, n, generator, device).clamp(min=tiny)
    return x / (x + y)


def build_pipeline(config: Mapping[str, Mapping[str, Any]], num_classes: int) -> Augment | None:
    """Chains the augmentations of ``config`` (name -> options) whose ``p`` is above zero,
    in ``PIPELINE_ORDER``.

    Returns:
        The pipeline, or None when nothing is enabled.
    """
    steps: list[Augment] = []
    for name in _ordered(config):
        entry = AUGMENTATIONS.get(name)
        options = entry.parse_options(config[name])
        if getattr(options, "p", 1.0) > 0:
            made = entry.factory(options, num_classes)
            wanted = "an augment(images, targets, generator)"
            steps.append(AUGMENTATIONS.made(entry, made, Callable, wanted))  # type: ignore[arg-type]
    if not steps:
        return None

    def pipeline(
        images: torch.Tensor, targets: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        for step in steps:
            images, targets = step(images, targets, generator)
        return images, targets

    return pipeline


def _ordered(names: Mapping[str, Any]) -> list[str]:
    known = [name for name in PIPELINE_ORDER if name in names]
    return known + sorted(name for name in names if name not in PIPELINE_ORDER)
