"""Device names are checked before any trial runs."""

from __future__ import annotations

import pytest
import torch

from automl.train import resolve_device


def test_cpu_and_auto_resolve() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected


@pytest.mark.parametrize("name", ["gpu", "tpu:0", "", "cuda:x"])
def test_invalid_device_names_are_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="device"):
        resolve_device(name)


def test_missing_cuda_device_is_rejected() -> None:
    index = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(ValueError, match="not available"):
        resolve_device(f"cuda:{index}")
