"""A small digits study trained in this process, and its test images as PNG files."""

from __future__ import annotations

import io
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from automl.data import ImageData, load_dataset
from automl.spec import validate_spec
from automl.store import Store, attrs, get_frozen_trial, load_state_dict, submit_study
from automl.train.evaluation import restore_model
from automl.train.trial_config import TrialConfig
from automl.worker import Worker, WorkerOptions
from tests.conftest import tiny_spec_data

DIGITS_OPTIONS = {"test_fraction": 0.2, "seed": 0}

TRAINED_SPEC: dict[str, Any] = tiny_spec_data(
    name="served",
    dataset={"source": "digits", "options": DIGITS_OPTIONS},
    budget={"n_trials": 1, "max_failed": 0},
    fixed={"epochs": 5, "width": 16, "depth": 2, "batch_size": 64, "lr": 0.01, "optimizer": "adam"},
    params={"weight_decay": {"type": "float", "low": 1e-6, "high": 1e-5, "log": True}},
)
"""One trial of a digits CNN that reaches about 97% accuracy in about 3 s on a CPU."""


def train_study(store: Store, **overrides: Any) -> int:
    """Submits ``TRAINED_SPEC`` (top-level fields replaced) and works it to completion."""
    spec = validate_spec({**TRAINED_SPEC, **overrides})
    study_id = submit_study(store, spec).id
    options = WorkerOptions(
        device="cpu", study_id=study_id, exit_when_idle=True, reap_interval=None
    )
    Worker(store, options).run()
    return study_id


REPORTED_STUDY: dict[str, Any] = {
    "name": "reported",
    "budget": {"n_trials": 3, "max_failed": 0},
    "fixed": {"epochs": 2, "width": 8, "depth": 1, "batch_size": 64, "optimizer": "adam"},
    "params": {
        "lr": {"type": "float", "low": 1e-2, "high": 5e-2, "log": True},
        "weight_decay": {"type": "float", "low": 1e-6, "high": 1e-4, "log": True},
    },
}
"""``train_study`` overrides for a study whose report can draw every plot: three trials
of two parameters (parameter importances need both), about 2 s on a CPU."""


def digits_test_split() -> ImageData:
    """The digits dataset as the trained study splits it."""
    return load_dataset("digits", DIGITS_OPTIONS)


def png_bytes(image: torch.Tensor, mode: str = "L") -> bytes:
    """One uint8 ``(1, H, W)`` image as PNG file content."""
    buffer = io.BytesIO()
    Image.fromarray(image[0].numpy().astype(np.uint8), mode="L").convert(mode).save(buffer, "PNG")
    return buffer.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares ``width x height`` pixels (a decompression bomb's
    shape: decoding it would allocate what the header says)."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    # IHDR: 8-byte signature, then length (4), type (4), width (4), height (4), ... and a CRC
    # over type and data at bytes 29-33.
    data[16:20] = width.to_bytes(4, "big")
    data[20:24] = height.to_bytes(4, "big")
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    return bytes(data)


def write_pngs(images: torch.Tensor, folder: Path, prefix: str = "digit") -> list[Path]:
    """Writes uint8 ``(N, 1, H, W)`` images as grayscale PNGs; returns their paths in order."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, image in enumerate(images):
        path = folder / f"{prefix}{index:03d}.png"
        Image.fromarray(image[0].numpy().astype(np.uint8), mode="L").save(path)
        paths.append(path)
    return paths


def in_process_argmax(store: Store, study_id: int, number: int, images: torch.Tensor) -> list[int]:
    """What the trial's model predicts for uint8 images, normalized as training did."""
    trial = get_frozen_trial(store, study_id, number)
    config = TrialConfig.model_validate(trial.user_attrs[attrs.CONFIG])
    data = digits_test_split()
    model = restore_model(
        config, load_state_dict(trial, store.artifacts), data.input_shape, data.num_classes
    )
    with torch.no_grad():
        return model(data.normalize(images)).argmax(dim=1).tolist()
