"""CUDA paths of the trainer (autocast, channels_last, fused, compile, no host syncs);
skipped without a GPU."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch

from automl.data import ImageData, load_dataset
from automl.models import build_model
from automl.train import loop, train
from automl.train.accel import SYNC_DEBUG_ENV, Accelerator
from automl.train.augment.base import PIPELINE_ORDER
from automl.train.checkpoint import TrainState
from automl.train.graphs import GRAPHS_ENV
from automl.train.hyperparameters import flat_config
from automl.train.loop import TrainResult

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


def test_trains_on_cuda_and_returns_cpu_weights() -> None:
    result = train(flat_config({"epochs": 3, "width": 16, "lr": 3e-3}), device="cuda")
    assert result.metrics["accuracy"] > 0.8
    assert all(tensor.device.type == "cpu" for tensor in result.state_dict.values())


def test_cuda_reports_every_epoch() -> None:
    epochs: list[int] = []
    train(
        flat_config({"epochs": 2, "width": 8}),
        lambda e, _: epochs.append(e) or False,
        device="cuda",
    )
    assert epochs == [1, 2]


def test_accelerator_on_cuda_uses_mixed_precision_channels_last_and_fused_optimizers() -> None:
    device = torch.device("cuda")
    accel = Accelerator.for_device(device, sample_dims=3)
    assert accel.dtype in (torch.bfloat16, torch.float16) and accel.channels_last and accel.fused
    assert torch.backends.cudnn.benchmark
    model = accel.model(build_model("cnn", {"width": 8}, (3, 32, 32), 10))
    conv = model[0][0][0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    batch = accel.batch(torch.rand(4, 3, 32, 32, device=device))
    assert batch.is_contiguous(memory_format=torch.channels_last)
    with accel.autocast():
        assert model(batch).dtype == accel.dtype
    clips = Accelerator.for_device(device, sample_dims=4)
    assert not clips.channels_last


@pytest.mark.parametrize(("precision", "dtype"), [("fp32", None), ("bf16", torch.bfloat16)])
def test_precision_overrides_the_cuda_autocast_dtype(
    precision: str, dtype: torch.dtype | None
) -> None:
    accel = Accelerator.for_device(torch.device("cuda"), sample_dims=3, precision=precision)  # type: ignore[arg-type]
    assert (accel.dtype, accel.scaler, accel.channels_last) == (dtype, None, True)
    result = train(flat_config({"epochs": 1, "width": 8, "precision": precision}), device="cuda")
    assert result.epochs_run == 1


def test_fp16_path_scales_gradients() -> None:
    accel = Accelerator(torch.device("cuda"), dtype=torch.float16)
    assert accel.scaler is not None
    model = torch.nn.Linear(4, 2).cuda()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = model.weight.detach().clone()
    with accel.autocast():
        loss = model(torch.rand(8, 4, device="cuda")).float().pow(2).mean()
    accel.step(loss, optimizer, list(model.parameters()), grad_clip=1.0)
    assert not torch.equal(before, model.weight)


def test_compiled_model_trains_on_cuda() -> None:
    result = train(flat_config({"epochs": 1, "width": 8, "compile": True}), device="cuda")
    assert _besides_autocast(result) == {"compile": "compiled"}
    assert result.metrics["accuracy"] > 0.1
    assert not any(key.startswith("_orig_mod") for key in result.state_dict)


@pytest.fixture(scope="module")
def rgb_digits() -> ImageData:
    """Digits as 3-channel images, so channels_last and the color augmentations matter."""
    data = load_dataset("digits")

    def rgb(images: torch.Tensor) -> torch.Tensor:
        return images.expand(-1, 3, -1, -1).contiguous()

    return dataclasses.replace(
        data,
        train_x=rgb(data.train_x),
        val_x=rgb(data.val_x),
        mean=data.mean.repeat(3),
        std=data.std.repeat(3),
    )


EVERY_AUGMENTATION = {f"{name}.p": 0.5 for name in PIPELINE_ORDER}


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"optimizer": "sgd", "grad_clip": 1.0, "scheduler": "one_cycle", **EVERY_AUGMENTATION},
        {"optimizer": "rmsprop", "loss": "focal", "color_jitter.hue": 0.2, "color_jitter.p": 1.0},
        {"optimizer": "adamw", "imbalance": "class_weights", "label_smoothing": 0.1},
    ],
    ids=["adam", "sgd-augmented", "rmsprop-focal-hue", "adamw-class-weights"],
)
def test_per_batch_loop_never_makes_the_host_wait(
    monkeypatch: pytest.MonkeyPatch, rgb_digits: ImageData, values: dict[str, Any]
) -> None:
    """Under ``AUTOML_SYNC_DEBUG=error`` any synchronizing operation in the per-batch loop
    of epochs 2 and 3 raises (epoch 1 autotunes cuDNN and is not watched)."""
    monkeypatch.setenv(SYNC_DEBUG_ENV, "error")
    config = flat_config({"epochs": 3, "width": 8, "batch_size": 128, **values})
    result = train(config, device="cuda", data=rgb_digits)
    assert result.epochs_run == 3
    assert torch.cuda.get_sync_debug_mode() == 0  # restored after training


def test_sync_guard_catches_a_synchronizing_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """The positive control: a stop check that reads a GPU value fails in epoch 2."""
    monkeypatch.setenv(SYNC_DEBUG_ENV, "error")
    flag = torch.zeros((), device="cuda")
    polls: list[int] = []

    def should_stop() -> bool:
        polls.append(1)
        return bool(flag > 0)  # copies the value to the host: a sync

    with pytest.raises(RuntimeError, match="synchroniz"):
        train(flat_config({"epochs": 2, "width": 8}), device="cuda", should_stop=should_stop)
    assert len(polls) > 1  # epoch 1 polled freely
    assert torch.cuda.get_sync_debug_mode() == 0


def test_train_on_cuda_uses_autocast_channels_last_fused_and_inference_mode(
    monkeypatch: pytest.MonkeyPatch, rgb_digits: ImageData
) -> None:
    seen: dict[str, Any] = {}
    optimizers: list[torch.optim.Optimizer] = []
    build_model_, build_optimizer_ = loop.build_model, loop.build_optimizer

    def record(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], output: Any) -> None:
        batch = inputs[0]
        if module.training:
            seen["train"] = (batch.is_contiguous(memory_format=torch.channels_last), output.dtype)
        else:
            seen["eval"] = (torch.is_inference_mode_enabled(), len(batch))

    def build(*args: Any, **kwargs: Any) -> torch.nn.Module:
        model = build_model_(*args, **kwargs)
        model.register_forward_hook(record)
        return model

    def build_optimizer(*args: Any, **kwargs: Any) -> torch.optim.Optimizer:
        optimizers.append(build_optimizer_(*args, **kwargs))
        return optimizers[-1]

    monkeypatch.setattr(loop, "build_model", build)
    monkeypatch.setattr(loop, "build_optimizer", build_optimizer)
    train(flat_config({"epochs": 1, "width": 8}), device="cuda", data=rgb_digits)
    native_bf16 = torch.cuda.get_device_capability()[0] >= 8
    assert seen["train"] == (True, torch.bfloat16 if native_bf16 else torch.float16)
    assert seen["eval"] == (True, len(rgb_digits.val_y))  # one large batch, no autograd
    assert optimizers[0].defaults["fused"] is True
    assert torch.backends.cudnn.benchmark


def test_updates_replay_from_a_cuda_graph_and_follow_the_eager_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Batch 100 leaves a smaller last batch per epoch, which runs eagerly between replays."""
    config = flat_config({"epochs": 3, "width": 16, "lr": 3e-3, "batch_size": 100})
    graphed = train(config, device="cuda")
    monkeypatch.setenv(GRAPHS_ENV, "0")
    eager = train(config, device="cuda")
    assert _besides_autocast(graphed) == {"cuda_graph": "replayed"}
    assert _besides_autocast(eager) == {}
    assert graphed.notes["autocast"] in ("bf16", "fp16")  # precision auto on a GPU
    assert graphed.metrics["accuracy"] > 0.8
    assert graphed.metrics["accuracy"] == pytest.approx(eager.metrics["accuracy"], abs=0.05)
    for replayed, stepped in zip(graphed.history, eager.history, strict=True):
        assert replayed["train_loss"] == pytest.approx(stepped["train_loss"], rel=0.15)


def test_a_changing_learning_rate_trains_eagerly() -> None:
    result = train(flat_config({"epochs": 1, "width": 8, "scheduler": "cosine"}), device="cuda")
    assert "cuda_graph" not in result.notes
    assert result.metrics["accuracy"] > 0.1


def test_a_run_resumed_from_a_checkpoint_replays_its_updates() -> None:
    config = flat_config({"epochs": 2, "width": 8, "optimizer": "rmsprop", "lr": 1e-3})
    states: list[TrainState] = []
    first = train(config, device="cuda", checkpoint=states.append)
    resumed = train(config, device="cuda", resume=states[0])
    assert _besides_autocast(resumed) == {"cuda_graph": "replayed"}
    assert [entry["epoch"] for entry in resumed.history] == [1, 2]
    assert resumed.metrics["accuracy"] == pytest.approx(first.metrics["accuracy"], abs=0.1)


def test_a_failed_capture_trains_on_eagerly(monkeypatch: pytest.MonkeyPatch) -> None:
    """A loss that reads a value back to the host cannot be captured: the run goes on
    eagerly on the stream it started on, and its notes say why."""
    build_loss_ = loop.build_loss

    def build_loss(*args: Any, **kwargs: Any) -> Any:
        loss_fn = build_loss_(*args, **kwargs)

        def reading_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            loss = loss_fn(logits, targets)
            if torch.cuda.is_current_stream_capturing():
                loss.item()  # a host sync: not allowed while capturing
            return loss

        return reading_loss

    monkeypatch.setattr(loop, "build_loss", build_loss)
    stream = torch.cuda.current_stream()
    result = train(flat_config({"epochs": 2, "width": 8, "lr": 3e-3}), device="cuda")
    assert result.notes["cuda_graph"].startswith("failed, trained eagerly: ")
    assert result.metrics["accuracy"] > 0.5
    assert torch.cuda.current_stream() == stream


def test_precise_statistics_under_replayed_updates_describe_the_final_weights() -> None:
    """The recomputation writes the buffers a CUDA graph updates in place: the run keeps
    replaying, and the kept statistics are those of its final weights."""
    from automl.train.evaluation import restore_model
    from automl.train.precise_bn import recompute_batch_norm

    data = load_dataset("digits")
    config = flat_config({"epochs": 2, "width": 16, "lr": 3e-3, "restore_best": False})
    result = train(config, data=data, device="cuda")
    assert _besides_autocast(result) == {"cuda_graph": "replayed"}
    device = torch.device("cuda")
    accel = Accelerator.for_device(device, sample_dims=3)
    model = accel.model(restore_model(config, result.state_dict, data.input_shape, 10).train())
    recompute_batch_norm(model, data.train_x.to(device), config.precise_bn, data.normalize, accel)
    for name, tensor in model.state_dict().items():
        if name.endswith(("running_mean", "running_var")):
            assert torch.allclose(tensor.cpu(), result.state_dict[name], rtol=0.05, atol=0.02)


def _besides_autocast(result: TrainResult) -> dict[str, Any]:
    """A run's notes but its arithmetic (``autocast``, noted by every run under ``auto``)."""
    return {key: value for key, value in result.notes.items() if key != "autocast"}
