"""A training update replayed as a CUDA graph: one launch per batch instead of hundreds.

For the small models a search tries, a step on a GPU is bound by the host queueing
kernels (forward, backward, optimizer: a few hundred launches of microseconds each), not
by the GPU. ``GraphedStep`` runs the first full-size batches eagerly (which allocates the
optimizer state and lets cuDNN pick its algorithms), then captures the whole update
(forward, loss, backward, clipping, optimizer step) once into a ``torch.cuda.CUDAGraph``
and from then on copies each batch into the captured input and replays the graph. Batches
of another size (an epoch's last, smaller one) run eagerly on the same weights and
optimizer state, so training is the same update as the eager loop's.

The graph bakes in every value the host computes at capture time (the learning rate, a
Python step counter), so it is used only when the learning rate stays constant and every
part of the update is automl's own: a plugin's optimizer, loss, model or imbalance
strategy may keep such state on the host (``graph_blocker`` lists the rules).
``AUTOML_CUDA_GRAPHS=0`` turns it off. Should capturing fail, training continues eagerly
and ``failure`` says why.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence

import torch

from automl.config import env_flag

logger = logging.getLogger(__name__)

GRAPHS_ENV = "AUTOML_CUDA_GRAPHS"
"""Environment variable: ``0`` (or ``false``, ``off``) trains eagerly on CUDA."""

WARMUP_STEPS = 3
"""Full-size eager steps before capturing (optimizer state, cuDNN autotuning)."""

Step = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``step(images, targets) -> loss``: one whole update (backward and optimizer included)."""


def graphs_enabled() -> bool:
    """Whether ``AUTOML_CUDA_GRAPHS`` leaves CUDA graphs on (the default).

    Raises:
        ValueError: If the variable is not a yes/no value.
    """
    return env_flag(GRAPHS_ENV, default=True)


def graph_blocker(
    device: torch.device,
    *,
    scaled: bool,
    compiled: bool,
    constant_lr: bool,
    plugins: Sequence[str] = (),
) -> str | None:
    """Why a run cannot replay its updates as a CUDA graph, or None when it can.

    Args:
        device: The training device (graphs are CUDA only).
        scaled: Whether fp16 gradient scaling is on (the scaler decides on the host).
        compiled: Whether the model runs through ``torch.compile``.
        constant_lr: Whether the learning rate stays the same at every step.
        plugins: The parts of the update that plugins provide (e.g. ``loss 'mine'``).
    """
    if device.type != "cuda":
        return "not a CUDA device"
    if not graphs_enabled():
        return f"{GRAPHS_ENV} is off"
    if scaled:
        return "fp16 gradient scaling"
    if compiled:
        return "compile: true"
    if not constant_lr:
        return "the learning rate changes during training"
    if plugins:
        return f"{plugins[0]} is a plugin (it may keep per-step state on the host)"
    return None


class GraphedStep:
    """Calls ``step`` eagerly for the first full-size batches, then replays it as a graph.

    Args:
        step: One whole update on a batch; it must not make the host wait for the device.
        optimizer: The optimizer ``step`` updates; its parameter groups are made
            capturable (their step counters then live on the device).
        batch_size: The size of the batches to replay; other sizes run eagerly.
        allow_syncs: A context in which capturing may wait for the device (the loop's
            sync watch exempts it).
    """

    def __init__(
        self,
        step: Step,
        optimizer: torch.optim.Optimizer,
        batch_size: int,
        allow_syncs: Callable[[], contextlib.AbstractContextManager[object]] = (
            contextlib.nullcontext
        ),
    ) -> None:
        self._step = step
        self._batch_size = batch_size
        self._allow_syncs = allow_syncs
        self._warmed = 0
        self._side: torch.cuda.Stream | None = None
        self._graph: torch.cuda.CUDAGraph | None = None
        self._inputs = self._targets = self._loss = torch.empty(0)
        self.failure: str | None = None
        _make_capturable(optimizer)

    @property
    def replaying(self) -> bool:
        """Whether full-size batches are replayed from a captured graph."""
        return self._graph is not None

    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Runs one update on a batch and returns its loss (a device tensor)."""
        if self.failure is not None or len(targets) != self._batch_size:
            return self._step(images, targets)
        with torch.cuda.device(images.device):  # streams and graphs belong to one device
            return self._graphed(images, targets)

    def _graphed(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self._graph is None:
            if self._warmed < WARMUP_STEPS:
                self._warmed += 1
                return self._side_stream_step(images, targets)
            self._capture(images, targets)
            if self._graph is None:  # failed: this batch and the rest run eagerly
                return self._step(images, targets)
        if images.shape != self._inputs.shape or targets.shape != self._targets.shape:
            return self._step(images, targets)
        self._inputs.copy_(images)
        self._targets.copy_(targets)
        self._graph.replay()
        return self._loss

    def _side_stream(self) -> torch.cuda.Stream:
        """The stream of the warm-up steps and of the capture (one, so that per-stream
        library state such as cuBLAS workspaces exists before capturing)."""
        if self._side is None:
            self._side = torch.cuda.Stream()
        return self._side

    def _side_stream_step(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """An eager update on the side stream, as CUDA's capture rules ask of warm-up work."""
        current = torch.cuda.current_stream()
        side = self._side_stream()
        side.wait_stream(current)
        with torch.cuda.stream(side):
            loss = self._step(images, targets)
        current.wait_stream(side)
        return loss

    def _capture(self, images: torch.Tensor, targets: torch.Tensor) -> None:
        """Captures the update on copies of this batch (capturing runs nothing; the caller
        replays the graph for this batch next). On failure, records why and leaves the
        current stream and memory as they were, so the caller can go on eagerly."""
        current = torch.cuda.current_stream()
        graph = torch.cuda.CUDAGraph()
        try:
            with self._allow_syncs():  # capturing synchronizes the device first
                self._inputs = images.clone()
                self._targets = targets.clone()
                with torch.cuda.graph(
                    graph, stream=self._side_stream(), capture_error_mode="thread_local"
                ):
                    self._loss = self._step(self._inputs, self._targets)
        except Exception as exc:  # any capture failure falls back to eager updates
            self.failure = failure_text(exc)
        if self.failure is None:
            self._graph = graph
            return
        # Only now, with the exception and its frames gone, can the half-built graph's
        # memory be returned; a stream left current by a failed capture is undone.
        torch.cuda.set_stream(current)
        del graph
        self._inputs = self._targets = self._loss = torch.empty(0)
        torch.cuda.empty_cache()
        logger.warning("CUDA graph capture failed, training eagerly: %s", self.failure)


def failure_text(exc: BaseException) -> str:
    """``Type: first line of the message``, for notes that say why a fast path was left."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".strip().rstrip(":")


def _make_capturable(optimizer: torch.optim.Optimizer) -> None:
    """Turns on ``capturable`` where the optimizer has it, moving step counters restored
    from a checkpoint onto their parameter's device (capturable steps read them there)."""
    for group in optimizer.param_groups:
        if "capturable" not in group or group["capturable"]:
            continue
        group["capturable"] = True
        for parameter in group["params"]:
            state = optimizer.state.get(parameter, {})
            step = state.get("step")
            if isinstance(step, torch.Tensor) and step.device != parameter.device:
                state["step"] = step.to(parameter.device)


__all__ = ["GRAPHS_ENV", "GraphedStep", "failure_text", "graph_blocker", "graphs_enabled"]
