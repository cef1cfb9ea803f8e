"""What a model costs: its parameter count and its measured inference latency."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from automl.train.accel import Accelerator

LATENCY_BATCH = 256
"""Batch size of ``ModelStats.batch_latency_ms``."""
LATENCY_BATCH_ELEMENTS = LATENCY_BATCH * 3 * 32 * 32
"""Most input values of the batch measured: 256 images up to 32x32 RGB, fewer larger ones
(a wide CNN took 4.6 GB on 256 images of 64x64 pixels)."""
WARMUP_RUNS = {"cpu": 1, "cuda": 3}
"""Untimed passes first: CUDA's first passes load kernels and grow the memory pool."""
MAX_TIMED_RUNS = 10
"""Timed runs of one batch size, at most; the fastest counts: other load on a shared
machine only ever slows a run down (the median of 3 once read 108 ms for a model whose
fastest run took 0.2 ms)."""
TIME_BUDGET_S = 0.25
"""Timed runs of one batch size stop after this long (at least one always runs): every
trial pays for the measurement, which at batch 256 on a CPU costs about a third of an
epoch's forward passes on a small dataset."""


@dataclass(frozen=True)
class ModelStats:
    """Size and speed of a model on the device it trains on."""

    params: int
    """Number of parameters (trainable or not)."""
    latency_ms: float
    """Inference time of one image (fastest run), in milliseconds."""
    batch_latency_ms: float
    """Inference time of a batch of ``LATENCY_BATCH`` images (fastest run), in ms (of a
    smaller batch, scaled, for images larger than 32x32 RGB: ``latency_batch``)."""


def count_parameters(model: nn.Module) -> int:
    """Number of parameters of ``model`` (shared parameters counted once)."""
    return sum(parameter.numel() for parameter in model.parameters())


@torch.inference_mode()
def measure_latency(
    model: nn.Module,
    input_shape: Sequence[int],
    batch_size: int,
    accel: Accelerator,
) -> float:
    """Time of ``model``'s fastest forward pass on one batch, in milliseconds.

    Runs untimed warm-up passes (``WARMUP_RUNS``), then up to ``MAX_TIMED_RUNS`` timed ones
    until ``TIME_BUDGET_S`` is spent, in eval mode and in the arithmetic and memory format of
    ``accel``, as evaluation runs; the model's train/eval mode is restored afterwards. The
    input is constant, so the global random state is untouched.
    """
    was_training = model.training
    model.eval()
    device = accel.device
    on_cuda = device.type == "cuda"
    batch = accel.batch(torch.full((batch_size, *input_shape), 0.5, device=device))

    def run() -> None:
        with accel.autocast():
            model(batch)
        if on_cuda:
            torch.cuda.synchronize(device)

    try:
        for _ in range(WARMUP_RUNS.get(device.type, 1)):
            run()
        times: list[float] = []
        budget_end = time.perf_counter() + TIME_BUDGET_S
        while len(times) < MAX_TIMED_RUNS and (not times or time.perf_counter() < budget_end):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
    finally:
        model.train(was_training)
    return min(times) * 1000.0


def profile_model(model: nn.Module, input_shape: Sequence[int], accel: Accelerator) -> ModelStats:
    """Counts ``model``'s parameters and measures its latency at batch 1 and batch 256 on
    ``accel``'s device, in its arithmetic.

    Images larger than ``LATENCY_BATCH_ELEMENTS`` allows at 256 (above 32x32 RGB) are
    measured in the largest batch within it, scaled to 256: at 384x384 pixels a batch of
    256 took a worker past 10 GB. The batch depends on the image size only, so every
    trial of a study is measured alike whatever its ``batch_size``.
    """
    batch = latency_batch(input_shape)
    batch_ms = measure_latency(model, input_shape, batch, accel)
    return ModelStats(
        params=count_parameters(model),
        latency_ms=measure_latency(model, input_shape, 1, accel),
        batch_latency_ms=batch_ms * LATENCY_BATCH / batch,
    )


def latency_batch(input_shape: Sequence[int]) -> int:
    """The batch ``batch_latency_ms`` runs: 256, or fewer images of a larger size."""
    elements = max(1, math.prod(input_shape))
    return max(1, min(LATENCY_BATCH, LATENCY_BATCH_ELEMENTS // elements))
