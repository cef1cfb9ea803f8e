"""What a model costs: parameters and latencies, measured in batches training can hold."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from automl.train import model_stats
from automl.train.accel import Accelerator
from automl.train.model_stats import LATENCY_BATCH, profile_model


class BatchRecorder(nn.Module):
    """A linear model that records the batch sizes it is run on."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(12, 2)
        self.batches: list[int] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.batches.append(images.shape[0])
        return self.linear(images.flatten(1))


@pytest.mark.parametrize(("max_batch", "largest"), [(8, 8), (LATENCY_BATCH, 256), (4096, 256)])
def test_the_batch_latency_runs_no_batch_larger_than_the_trials(
    max_batch: int, largest: int
) -> None:
    """Found by a tester: at 384x384 pixels the batch of 256 took a worker past 10 GB, for a
    trial that trained in batches of 8."""
    model = BatchRecorder()
    accel = Accelerator.for_device(torch.device("cpu"), sample_dims=3)

    stats = profile_model(model, (3, 2, 2), accel, max_batch)

    assert max(model.batches) == largest
    assert set(model.batches) == {1, largest}
    assert stats.params == 12 * 2 + 2
    assert stats.batch_latency_ms > 0


def test_a_smaller_batchs_latency_is_scaled_to_256_images(monkeypatch: pytest.MonkeyPatch) -> None:
    def two_ms_per_image(model: nn.Module, shape: object, batch: int, accel: object) -> float:
        return 2.0 * batch

    monkeypatch.setattr(model_stats, "measure_latency", two_ms_per_image)
    accel = Accelerator.for_device(torch.device("cpu"), sample_dims=3)

    stats = profile_model(BatchRecorder(), (3, 2, 2), accel, max_batch=8)

    assert (stats.latency_ms, stats.batch_latency_ms) == (2.0, 2.0 * LATENCY_BATCH)
