"""Tests of the CPU accelerator settings: fp32 with channels_last for image batches, and
bf16 autocast when a trial asks for ``precision: bf16``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from automl.data import ImageData, load_dataset
from automl.models import build_model
from automl.train import train
from automl.train.accel import CPU_CHANNELS_LAST_ENV, Accelerator, cpu_has_native_bf16
from automl.train.evaluation import evaluate_weights
from automl.train.hyperparameters import flat_config
from automl.train.model_stats import profile_model

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits() -> ImageData:
    """A 400/200 slice of digits (8x8, one channel)."""
    full = load_dataset("digits")
    return dataclasses.replace(
        full,
        train_x=full.train_x[:400],
        train_y=full.train_y[:400],
        val_x=full.val_x[:200],
        val_y=full.val_y[:200],
    )


def test_images_on_cpu_use_channels_last_in_fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CPU_CHANNELS_LAST_ENV, raising=False)
    accel = Accelerator.for_device(CPU, sample_dims=3)
    assert (accel.dtype, accel.channels_last, accel.fused, accel.scaler) == (
        None,
        True,
        False,
        None,
    )
    assert not Accelerator.for_device(CPU, sample_dims=4).channels_last  # clips stay 5-D


@pytest.mark.parametrize("value", ["0", "false", "Off", " no "])
def test_environment_turns_channels_last_off(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(CPU_CHANNELS_LAST_ENV, value)
    assert not Accelerator.for_device(CPU, sample_dims=3).channels_last


def test_conv_weights_and_batches_change_format_others_do_not() -> None:
    accel = Accelerator.for_device(CPU, sample_dims=3)
    model = accel.model(build_model("cnn", {"width": 8}, (3, 16, 16), 4))
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous()
    batch = accel.batch(torch.rand(5, 3, 16, 16))
    assert batch.is_contiguous(memory_format=torch.channels_last)
    rows = torch.rand(5, 7)
    assert accel.batch(rows) is rows


def test_rnn_sees_the_same_values_in_channels_last() -> None:
    accel = Accelerator.for_device(CPU, sample_dims=3)
    torch.manual_seed(0)
    model = build_model("rnn", {"hidden": 16}, (3, 8, 8), 4).eval()
    images = torch.rand(6, 3, 8, 8)
    with torch.no_grad():
        plain = model(images)
        converted = accel.model(model)(accel.batch(images))
    assert torch.equal(plain, converted)


@pytest.mark.parametrize("model", ["cnn", "cnn_rnn"])
def test_channels_last_is_deterministic_and_as_accurate(
    digits: ImageData, monkeypatch: pytest.MonkeyPatch, model: str
) -> None:
    config = flat_config(
        {"model": model, "epochs": 3, "width": 8, "depth": 2, "batch_size": 64, "lr": 0.01}
    )
    monkeypatch.delenv(CPU_CHANNELS_LAST_ENV, raising=False)
    first, again = (train(config, data=digits) for _ in range(2))
    assert all(torch.equal(first.state_dict[k], again.state_dict[k]) for k in first.state_dict)
    assert [row["accuracy"] for row in first.history] == [row["accuracy"] for row in again.history]
    monkeypatch.setenv(CPU_CHANNELS_LAST_ENV, "0")
    contiguous = train(config, data=digits)
    # Different conv kernels round differently; the same seed still lands close.
    assert abs(first.history[-1]["accuracy"] - contiguous.history[-1]["accuracy"]) <= 0.05


@pytest.mark.parametrize(
    ("precision", "dtype"), [("auto", None), ("fp32", None), ("bf16", torch.bfloat16)]
)
def test_precision_picks_the_cpu_autocast_dtype(precision: str, dtype: torch.dtype | None) -> None:
    accel = Accelerator.for_device(CPU, sample_dims=3, precision=precision)  # type: ignore[arg-type]
    assert (accel.dtype, accel.scaler) == (dtype, None)
    model = accel.model(build_model("cnn", {"width": 8}, (3, 16, 16), 4))
    with accel.autocast():
        logits = model(accel.batch(torch.rand(5, 3, 16, 16)))
    assert logits.dtype == (dtype or torch.float32)


@pytest.mark.parametrize(
    "architecture",
    [
        {"model": "cnn", "width": 8, "depth": 2},
        {"model": "cnn_rnn", "width": 8, "depth": 2},
        {"model": "rnn", "hidden": 16},
    ],
    ids=lambda architecture: architecture["model"],
)
def test_bf16_on_the_cpu_is_deterministic_as_accurate_and_scored_alike(
    digits: ImageData, architecture: dict[str, object]
) -> None:
    # Six epochs: at three, these models still sit on the steep part of their curve,
    # where the different roundings of bf16 and fp32 move the accuracy by 0.05.
    params = {**architecture, "epochs": 6, "batch_size": 64, "lr": 0.01}
    config = flat_config({**params, "precision": "bf16"})
    first, again = (train(config, data=digits) for _ in range(2))
    assert all(torch.equal(first.state_dict[k], again.state_dict[k]) for k in first.state_dict)

    def scores(history: list[dict[str, float]]) -> list[tuple[float, float, float]]:
        return [(row["train_loss"], row["loss"], row["accuracy"]) for row in history]

    assert scores(first.history) == scores(again.history)
    full = train(flat_config({**params, "precision": "fp32"}), data=digits)
    assert not all(torch.equal(first.state_dict[k], full.state_dict[k]) for k in full.state_dict)
    # bf16 rounds differently (and each CPU's kernels round their own way); it must not
    # cost accuracy beyond the noise of 200 validation images.
    assert first.history[-1]["accuracy"] >= full.history[-1]["accuracy"] - 0.05
    assert first.history[-1]["accuracy"] >= 0.6  # it learned
    rescored = evaluate_weights(config, first.state_dict, split="val", data=digits)
    assert rescored.metrics["accuracy"] == first.metrics["accuracy"]
    assert rescored.metrics["loss"] == first.metrics["loss"]  # bit for bit: bf16 again
    # The card tells users the exported fp32 files will not reproduce these scores exactly.
    assert first.notes["autocast"] == "bf16" and "autocast" not in full.notes
    # On a CPU without native bf16 the trial says why it ran slowly (an LSTM: 50x).
    native = cpu_has_native_bf16()
    assert ("bf16" in first.notes) == (native is False) and "bf16" not in full.notes


def test_latency_is_measured_in_the_trials_arithmetic_and_format() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten())
    seen: list[tuple[torch.dtype, bool]] = []
    model.register_forward_hook(
        lambda _module, inputs, output: seen.append(
            (output.dtype, inputs[0].is_contiguous(memory_format=torch.channels_last))
        )
    )
    for dtype, channels_last in [(None, False), (torch.bfloat16, True)]:
        seen.clear()
        accel = Accelerator(CPU, dtype=dtype, channels_last=channels_last)
        stats = profile_model(accel.model(model), (3, 8, 8), accel)
        assert stats.latency_ms > 0 and stats.params == 3 * 4 * 9 + 4
        assert set(seen) == {(dtype or torch.float32, channels_last)}


@pytest.mark.parametrize(
    ("flags", "native"),
    [
        ("fpu sse avx2 avx512f", False),
        ("fpu avx2 avx512f avx512_bf16", True),
        ("fpu avx2 amx_bf16 amx_tile", True),
        ("fp asimd evtstrm aes", False),  # an Arm CPU without BF16 (Graviton2)
        ("fp asimd sve bf16 i8mm", True),
    ],
)
def test_native_bf16_is_read_from_the_cpus_flags(
    flags: str, native: bool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    label = "flags" if "avx2" in flags else "Features"  # x86 and Arm name the line apart
    cpuinfo.write_text(f"processor\t: 0\n{label}\t\t: {flags}\n\n", encoding="ascii")
    real_open = open
    monkeypatch.setattr(
        "builtins.open",
        lambda path, *a, **k: real_open(cpuinfo if path == "/proc/cpuinfo" else path, *a, **k),
    )
    cpu_has_native_bf16.cache_clear()
    try:
        assert cpu_has_native_bf16() is native
    finally:
        cpu_has_native_bf16.cache_clear()
