"""Optimizers and learning-rate schedules, registered by name with their options."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import torch
from pydantic import Field

from automl.registry import AppliesWhen, EntryOptions, Registry

ParamsOrGroups = Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]]


class OptimizerFactory(Protocol):
    """Builds an optimizer over ``params`` (tensors or param groups); ``fused`` asks for the
    fused (or else multi-tensor) CUDA implementation where the optimizer has one."""

    def __call__(
        self,
        options: Any,
        params: ParamsOrGroups,
        *,
        lr: float,
        weight_decay: float,
        fused: bool = False,
    ) -> torch.optim.Optimizer: ...


Schedule = Callable[[float], float]
"""Maps training progress in [0, 1] to a learning-rate multiplier."""
ScheduleFactory = Callable[[Any], Schedule]


@dataclass(frozen=True)
class WarmsUp:
    """A schedule that rises to the peak learning rate by itself (``one_cycle``).

    ``build_scheduler`` runs no linear warmup before it: one would reach the peak, then
    drop to the schedule's own low start and rise a second time.
    """

    schedule: Schedule

    def __call__(self, progress: float) -> float:
        """The schedule's multiplier at ``progress``."""
        return self.schedule(progress)


OPTIMIZERS: Registry[OptimizerFactory] = Registry(
    "optimizer", group="automl.optimizers", qualifies=True
)
SCHEDULERS: Registry[ScheduleFactory] = Registry(
    "scheduler", group="automl.schedulers", qualifies=True
)


class SgdOptions(EntryOptions):
    """Options of SGD."""

    APPLIES_WHEN: ClassVar[Mapping[str, AppliesWhen]] = {
        "nesterov": AppliesWhen("momentum", above=0),
    }

    momentum: float = Field(0.9, ge=0, lt=1, description="Momentum factor.")
    nesterov: bool = Field(True, description="Nesterov momentum (needs momentum > 0).")


class RmspropOptions(EntryOptions):
    """Options of RMSprop."""

    momentum: float = Field(0.9, ge=0, lt=1, description="Momentum factor.")
    rho: float = Field(0.99, gt=0, lt=1, description="Smoothing of the squared gradient.")


class AdamOptions(EntryOptions):
    """Options of Adam and AdamW."""

    beta1: float = Field(0.9, ge=0, lt=1, description="Decay of the first moment.")
    beta2: float = Field(0.999, ge=0, lt=1, description="Decay of the second moment.")


@OPTIMIZERS.register("sgd", options=SgdOptions)
def sgd(
    opts: SgdOptions, params: ParamsOrGroups, *, lr: float, weight_decay: float, fused: bool = False
) -> torch.optim.Optimizer:
    """SGD with (Nesterov) momentum."""
    return torch.optim.SGD(
        params,
        lr=lr,
        momentum=opts.momentum,
        nesterov=opts.nesterov and opts.momentum > 0,
        weight_decay=weight_decay,
        fused=fused or None,
    )


@OPTIMIZERS.register("adam", options=AdamOptions)
def adam(
    opts: AdamOptions,
    params: ParamsOrGroups,
    *,
    lr: float,
    weight_decay: float,
    fused: bool = False,
) -> torch.optim.Optimizer:
    """Adam with L2 weight decay."""
    return torch.optim.Adam(
        params,
        lr=lr,
        betas=(opts.beta1, opts.beta2),
        weight_decay=weight_decay,
        fused=fused or None,
    )


@OPTIMIZERS.register("adamw", options=AdamOptions)
def adamw(
    opts: AdamOptions,
    params: ParamsOrGroups,
    *,
    lr: float,
    weight_decay: float,
    fused: bool = False,
) -> torch.optim.Optimizer:
    """Adam with decoupled weight decay."""
    return torch.optim.AdamW(
        params,
        lr=lr,
        betas=(opts.beta1, opts.beta2),
        weight_decay=weight_decay,
        fused=fused or None,
    )


@OPTIMIZERS.register("rmsprop", options=RmspropOptions)
def rmsprop(
    opts: RmspropOptions,
    params: ParamsOrGroups,
    *,
    lr: float,
    weight_decay: float,
    fused: bool = False,
) -> torch.optim.Optimizer:
    """RMSprop with momentum."""
    return torch.optim.RMSprop(
        params,
        lr=lr,
        alpha=opts.rho,
        momentum=opts.momentum,
        weight_decay=weight_decay,
        foreach=fused or None,  # RMSprop has no fused kernel; the multi-tensor one instead
    )


class StepOptions(EntryOptions):
    """Options of the step schedule."""

    factor: float = Field(0.1, gt=0, lt=1, description="Factor applied at each step.")
    steps: int = Field(2, ge=1, le=10, description="Steps, evenly spaced over training.")


class OneCycleOptions(EntryOptions):
    """Options of the one-cycle schedule."""

    pct_start: float = Field(0.25, gt=0, lt=1, description="Share of training spent rising.")
    div_factor: float = Field(25.0, ge=1, description="Peak learning rate / initial one.")
    final_div_factor: float = Field(
        1e4, ge=1, description="Initial learning rate / the one where training ends."
    )


@SCHEDULERS.register("constant")
def constant(opts: EntryOptions) -> Schedule:
    """Keeps the learning rate."""
    return lambda progress: 1.0


@SCHEDULERS.register("cosine")
def cosine(opts: EntryOptions) -> Schedule:
    """Cosine decay, reaching zero where training ends (after its last step)."""
    return lambda progress: 0.5 * (1.0 + math.cos(math.pi * progress))


@SCHEDULERS.register("step", options=StepOptions)
def step(opts: StepOptions) -> Schedule:
    """Multiplies the learning rate by ``factor`` at evenly spaced points of training."""
    return lambda progress: opts.factor ** min(int(progress * (opts.steps + 1)), opts.steps)


@SCHEDULERS.register("linear")
def linear(opts: EntryOptions) -> Schedule:
    """Linear decay, reaching zero where training ends (after its last step)."""
    return lambda progress: 1.0 - progress


@SCHEDULERS.register("one_cycle", options=OneCycleOptions)
def one_cycle(opts: OneCycleOptions) -> Schedule:
    """One cycle (Smith, 2018): cosine rise to the peak, then cosine annealing far below.

    The rise is its warmup: ``build_scheduler`` runs no other (``WarmsUp``).
    """
    start = 1.0 / opts.div_factor
    end = start / opts.final_div_factor

    def anneal(low: float, high: float, fraction: float) -> float:
        return high + (low - high) * 0.5 * (1.0 + math.cos(math.pi * fraction))

    def multiplier(progress: float) -> float:
        if progress < opts.pct_start:
            return anneal(start, 1.0, progress / opts.pct_start)
        return anneal(1.0, end, (progress - opts.pct_start) / (1.0 - opts.pct_start))

    return WarmsUp(multiplier)


def build_optimizer(
    name: str,
    options: Mapping[str, Any],
    params: ParamsOrGroups,
    *,
    lr: float,
    weight_decay: float,
    fused: bool = False,
) -> torch.optim.Optimizer:
    """Builds the optimizer ``name`` with its ``options`` over ``params`` (``fused``: the
    fused CUDA implementation where there is one)."""
    entry = OPTIMIZERS.get(name)
    made = entry.factory(
        entry.parse_options(options), params, lr=lr, weight_decay=weight_decay, fused=fused
    )
    return OPTIMIZERS.made(entry, made, torch.optim.Optimizer, "a torch.optim.Optimizer")


def build_scheduler(
    name: str,
    options: Mapping[str, Any],
    optimizer: torch.optim.Optimizer,
    *,
    total_steps: int,
    warmup_steps: int,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Builds a per-step schedule: linear warmup over ``warmup_steps``, then ``name``
    (without the warmup if ``name`` warms up by itself: ``ignores_warmup``)."""
    entry = SCHEDULERS.get(name)
    schedule = SCHEDULERS.made(
        entry,
        entry.factory(entry.parse_options(options)),
        Callable,
        "a schedule(progress) -> multiplier",
    )
    total = max(total_steps, 1)
    warmup = 0 if isinstance(schedule, WarmsUp) else _warmup_steps(total_steps, warmup_steps)

    def multiplier(step_index: int) -> float:
        if step_index < warmup:
            return (step_index + 1) / warmup
        return schedule(min((step_index - warmup) / max(total - warmup, 1), 1.0))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)


def ignores_warmup(name: str, options: Mapping[str, Any]) -> bool:
    """Whether the schedule ``name`` rises to the peak by itself, so that ``build_scheduler``
    runs no warmup before it (``WarmsUp``)."""
    entry = SCHEDULERS.get(name)
    return isinstance(entry.factory(entry.parse_options(options)), WarmsUp)


def constant_learning_rate(name: str, *, total_steps: int, warmup_steps: int) -> bool:
    """Whether ``build_scheduler`` with these arguments keeps the learning rate unchanged
    at every step (the ``constant`` schedule and no warmup step)."""
    return name == "constant" and _warmup_steps(total_steps, warmup_steps) == 0


def _warmup_steps(total_steps: int, warmup_steps: int) -> int:
    """The warmup steps a schedule runs: at most all steps but the last."""
    return min(warmup_steps, max(total_steps, 1) - 1)
