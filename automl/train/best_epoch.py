"""The best epoch of a run: which one it was, its metrics and a copy of its weights.

With ``restore_best`` a run ends with the weights and metrics of the epoch whose monitored
validation metric was best, not the last one's: with ``patience`` the last epochs are the
ones that did not improve, and with a noisy metric the last epoch is not always the best.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from automl.train.metrics import Direction


class BestEpoch:
    """Keeps the epoch with the best monitored value seen so far.

    Ties go to the later epoch (trained longer), so a metric that does not change across
    epochs (``latency_ms``, ``params``) keeps the last one, as without restoring.

    Args:
        direction: Whether larger (``maximize``) or smaller (``minimize``) values are better.
    """

    def __init__(self, direction: Direction) -> None:
        self.sign = 1.0 if direction == "maximize" else -1.0
        self.epoch: int | None = None
        self.score = -math.inf
        self.metrics: dict[str, float] = {}
        self.confusion: torch.Tensor | None = None
        self.weights: dict[str, torch.Tensor] | None = None

    def offer(
        self,
        epoch: int,
        metrics: dict[str, float],
        value: float,
        confusion: torch.Tensor,
        model: torch.nn.Module,
    ) -> None:
        """Records ``epoch`` if ``value`` is at least as good as the best so far (a value
        that is not finite never is); its weights are copied on their device."""
        if not math.isfinite(value) or self.sign * value < self.score:
            return
        self.epoch, self.score = epoch, self.sign * value
        self.metrics = dict(metrics)
        self.confusion = confusion.clone()
        current = model.state_dict()
        if self.weights is None or self.weights.keys() != current.keys():
            self.weights = {k: v.detach().clone() for k, v in current.items()}
        else:  # into the copy already held: never two copies at once on the device
            for name, tensor in current.items():
                self.weights[name].copy_(tensor.detach())

    def to_state(self, model_epoch: int | None) -> dict[str, Any] | None:
        """What a checkpoint keeps (on the CPU); the weights are left out when they are the
        model's own: the best epoch is ``model_epoch``, the epoch at whose end the model is
        checkpointed (None within an epoch)."""
        if self.epoch is None or self.confusion is None or self.weights is None:
            return None
        same = self.epoch == model_epoch
        return {
            "epoch": self.epoch,
            "score": self.score,
            "metrics": dict(self.metrics),
            "confusion": self.confusion.detach().cpu(),
            "weights": None
            if same
            else {k: v.to("cpu", copy=True) for k, v in self.weights.items()},
        }

    def load_state(self, state: dict[str, Any] | None, model: torch.nn.Module) -> None:
        """Continues from ``to_state``'s record; ``model`` holds the restored checkpoint's
        weights (the best ones when the record left them out)."""
        if state is None:
            return
        self.epoch, self.score = int(state["epoch"]), float(state["score"])
        self.metrics = dict(state["metrics"])
        self.confusion = state["confusion"].clone()
        saved = state["weights"]
        current = model.state_dict()
        source = current if saved is None else saved
        self.weights = {k: v.detach().to(current[k].device, copy=True) for k, v in source.items()}

    def restore(self, model: torch.nn.Module, last_epoch: int) -> bool:
        """Loads the best epoch's weights into ``model`` unless ``last_epoch`` was the
        best; returns whether it did."""
        if self.epoch is None or self.weights is None or self.epoch == last_epoch:
            return False
        model.load_state_dict(self.weights)
        return True
