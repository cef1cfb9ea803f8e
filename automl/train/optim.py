"""Optimizers and learning-rate schedules, registered by name."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import torch

from automl.registry import Registry

if TYPE_CHECKING:
    from automl.train.config import TrialConfig

OptimizerFactory = Callable[["TrialConfig", Iterable[torch.nn.Parameter]], torch.optim.Optimizer]
Schedule = Callable[[float], float]
"""Maps training progress in [0, 1] to a learning-rate multiplier."""

OPTIMIZERS: Registry[OptimizerFactory] = Registry("optimizer")
SCHEDULERS: Registry[Schedule] = Registry("scheduler")


@OPTIMIZERS.register("sgd")
def sgd(config: TrialConfig, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """SGD with (Nesterov) momentum."""
    return torch.optim.SGD(
        params,
        lr=config.lr,
        momentum=config.momentum,
        nesterov=config.momentum > 0,
        weight_decay=config.weight_decay,
    )


@OPTIMIZERS.register("adam")
def adam(config: TrialConfig, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """Adam with L2 weight decay."""
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


@OPTIMIZERS.register("adamw")
def adamw(config: TrialConfig, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """Adam with decoupled weight decay."""
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


@OPTIMIZERS.register("rmsprop")
def rmsprop(config: TrialConfig, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """RMSprop with momentum."""
    return torch.optim.RMSprop(
        params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )


@SCHEDULERS.register("constant")
def constant(progress: float) -> float:
    """Keeps the learning rate."""
    return 1.0


@SCHEDULERS.register("cosine")
def cosine(progress: float) -> float:
    """Cosine decay to zero."""
    return 0.5 * (1.0 + math.cos(math.pi * progress))


@SCHEDULERS.register("step")
def step(progress: float) -> float:
    """Divides the learning rate by 10 at one and two thirds of training."""
    return 0.1 ** min(int(progress * 3), 2)


@SCHEDULERS.register("linear")
def linear(progress: float) -> float:
    """Linear decay to zero."""
    return 1.0 - progress


def build_optimizer(config: TrialConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """Builds the optimizer named by ``config.optimizer`` over ``model``'s parameters."""
    return OPTIMIZERS.get(config.optimizer)(config, model.parameters())


def build_scheduler(
    config: TrialConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Builds a per-step schedule: linear warmup, then ``config.scheduler``."""
    schedule = SCHEDULERS.get(config.scheduler)
    total = max(config.epochs * steps_per_epoch, 1)
    warmup = min(round(config.warmup_epochs * steps_per_epoch), total - 1)

    def multiplier(step_index: int) -> float:
        if step_index < warmup:
            return (step_index + 1) / warmup
        return schedule(min((step_index - warmup) / max(total - warmup, 1), 1.0))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)
