"""Training state for checkpoint and resume: capture it, restore it, turn it into bytes.

A ``TrainState`` is taken at a batch boundary: after ``batch`` batches of epoch
``epoch + 1`` (``batch == 0``: at the end of epoch ``epoch``). It holds everything the
loop needs to continue as if never stopped: weights, optimizer and scheduler state, the
batch-order generator's state at the start of the current epoch (to rebuild that epoch's
order), the global RNG states, the partial loss sum and the history so far. Where it is
stored is the caller's business (``train(..., checkpoint=sink)``).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

CheckpointSink = Callable[["TrainState"], None]
"""Called with a state to keep; it must store it completely or not at all."""


@dataclass
class TrainState:
    """Where a training run is, enough to continue it exactly."""

    epoch: int
    """Epochs completed."""
    batch: int
    """Batches completed in the following epoch (0 at an epoch boundary)."""
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    epoch_generator: torch.Tensor
    """Batch-order generator state at the start of the current epoch."""
    cpu_rng: torch.Tensor
    cuda_rng: list[torch.Tensor] = field(default_factory=list)
    loss_sum: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)
    seed: int = 0
    """The config's seed; a resumed attempt trains with it (0 in checkpoints written before
    trials had their own seeds, which is what those trained with)."""
    best: dict[str, Any] | None = None
    """The best epoch so far (``BestEpoch.to_state``), with ``restore_best``."""

    def to_bytes(self) -> bytes:
        """Serializes the state (``torch.save`` of plain containers and tensors)."""
        buffer = io.BytesIO()
        torch.save(asdict(self), buffer)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes) -> TrainState:
        """Reads a state written by ``to_bytes`` (``weights_only=True``: no code runs)."""
        data = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
        return cls(**data)


def _cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {key: _cpu(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_cpu(item) for item in value)
    return value


def capture(
    *,
    epoch: int,
    batch: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    epoch_generator: torch.Tensor,
    loss_sum: float,
    history: list[dict[str, float]],
    seed: int,
    best: dict[str, Any] | None = None,
) -> TrainState:
    """Takes a copy (on the CPU) of everything ``restore`` needs."""
    cuda_rng = list(torch.cuda.get_rng_state_all()) if torch.cuda.is_initialized() else []
    return TrainState(
        epoch=epoch,
        batch=batch,
        model=_cpu(model.state_dict()),
        optimizer=_cpu(optimizer.state_dict()),
        scheduler=_cpu(scheduler.state_dict()),
        epoch_generator=epoch_generator.clone(),
        cpu_rng=torch.get_rng_state(),
        cuda_rng=[state.clone() for state in cuda_rng],
        loss_sum=loss_sum,
        history=[dict(entry) for entry in history],
        seed=seed,
        best=best,
    )


def restore(
    state: TrainState,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> None:
    """Loads weights, optimizer, scheduler and global RNG states from ``state``."""
    model.load_state_dict(state.model)
    _load_optimizer(optimizer, state.optimizer)
    scheduler.load_state_dict(state.scheduler)
    torch.set_rng_state(state.cpu_rng)
    if state.cuda_rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state.cuda_rng[: torch.cuda.device_count()])


IMPLEMENTATION_FLAGS = ("capturable", "fused", "foreach")
"""Optimizer group settings that describe how this run steps, not what it learned."""


def _load_optimizer(optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """Loads ``saved`` into ``optimizer``, keeping this run's implementation flags.

    ``load_state_dict`` takes every group setting from the checkpoint, so a checkpoint of a
    run whose updates replayed from a CUDA graph (``capturable``) would make a CPU run's
    optimizer fail on its first step. Step counters go where this run's flags keep them:
    on the parameter's device when capturable or fused, else on the CPU.
    """
    kept = [
        {flag: group[flag] for flag in IMPLEMENTATION_FLAGS if flag in group}
        for group in optimizer.param_groups
    ]
    optimizer.load_state_dict(saved)
    for group, flags in zip(optimizer.param_groups, kept, strict=True):
        group.update(flags)
        on_device = bool(group.get("capturable") or group.get("fused"))
        for parameter in group["params"]:
            state = optimizer.state.get(parameter, {})
            step = state.get("step")
            if isinstance(step, torch.Tensor):
                state["step"] = step.to(parameter.device if on_device else "cpu")
