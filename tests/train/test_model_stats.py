"""What a model costs: parameters and latencies, measured in batches that fit in memory."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from automl.train import model_stats
from automl.train.accel import Accelerator
from automl.train.model_stats import LATENCY_BATCH, latency_batch, profile_model


class BatchRecorder(nn.Module):
    """A model that records the batch sizes it is run on."""

    def __init__(self, values: int) -> None:
        super().__init__()
        self.linear = nn.Linear(values, 2)
        self.batches: list[int] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.batches.append(images.shape[0])
        return self.linear(images.flatten(1))


@pytest.mark.parametrize(
    ("shape", "batch"),
    [
        ((1, 8, 8), 256),
        ((3, 32, 32), 256),
        ((3, 64, 64), 64),
        ((1, 64, 64), 192),
        ((3, 384, 384), 1),
    ],
)
def test_the_batch_latency_runs_256_images_up_to_32x32_rgb_and_fewer_larger_ones(
    shape: tuple[int, int, int], batch: int
) -> None:
    """Found by a tester: at 384x384 pixels the batch of 256 took a worker past 10 GB (and
    by review: a wide CNN 4.6 GB at 64x64)."""
    model = BatchRecorder(shape[0] * shape[1] * shape[2])
    accel = Accelerator.for_device(torch.device("cpu"), sample_dims=3)

    stats = profile_model(model, shape, accel)

    assert latency_batch(shape) == batch
    assert set(model.batches) == {1, batch}
    assert stats.params == model.linear.weight.numel() + 2
    assert stats.batch_latency_ms > 0


def test_a_smaller_batchs_latency_is_scaled_to_256_images(monkeypatch: pytest.MonkeyPatch) -> None:
    def two_ms_per_image(model: nn.Module, shape: object, batch: int, accel: object) -> float:
        return 2.0 * batch

    monkeypatch.setattr(model_stats, "measure_latency", two_ms_per_image)
    accel = Accelerator.for_device(torch.device("cpu"), sample_dims=3)

    stats = profile_model(BatchRecorder(3 * 384 * 384), (3, 384, 384), accel)

    assert (stats.latency_ms, stats.batch_latency_ms) == (2.0, 2.0 * LATENCY_BATCH)


class SlowAtFirst(BatchRecorder):
    """A model whose first two timed passes are slowed down, as by another process."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if len(self.batches) in (1, 2):  # after the one warm-up pass on the CPU
            time.sleep(0.05)
        return super().forward(images)


def test_the_latency_is_the_fastest_timed_pass_not_a_slowed_one() -> None:
    """Found by a tester: the median of 3 passes read 108 ms for a model whose passes take
    a fraction of a millisecond, on a busy machine."""
    model = SlowAtFirst(4)
    latency = model_stats.measure_latency(model, (4,), 1, Accelerator(torch.device("cpu")))
    # The warm-up, the two slowed passes, and fast ones while the budget lasts (at most 10).
    assert 4 <= len(model.batches) <= 1 + model_stats.MAX_TIMED_RUNS
    assert latency < 25.0  # the median of the first three passes is over 50 ms
