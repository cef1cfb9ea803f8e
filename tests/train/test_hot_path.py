"""The fast training path against a plain reference loop, its sync guard and the compile
fallback, on the CPU (the CUDA side is in ``test_cuda.py``)."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.data import DataLoader, TensorDataset

from automl.data import ImageData, load_dataset
from automl.models import build_model
from automl.train import TrialConfig, loop, train
from automl.train.accel import SYNC_DEBUG_ENV, Accelerator, CompiledModel, sync_debug_from_env
from automl.train.augment import policies
from automl.train.augment.base import PIPELINE_ORDER
from automl.train.hyperparameters import flat_config

TIMINGS = {"latency_ms", "batch_latency_ms"}

REFERENCE = {"epochs": 5, "width": 16, "lr": 3e-3, "batch_size": 64, "seed": 0}
"""Five epochs of the default CNN reach about 0.97 on digits, far above chance (0.1)."""
ACCURACY_FLOOR = 0.9
"""Both loops must clear it, so the comparison cannot pass with two broken loops."""
TOLERANCE = 0.03
"""Accuracies may differ by this much (11 of 360 validation images). The two loops see
the same initial weights and batches but round differently; over seeds 0-4 their gap was
at most 0.014, while either loop's accuracy varied by 0.025 from seed to seed, and the
binomial noise of a difference of two accuracies near 0.97 on 360 images is about 0.013
(so 0.03 is over two of its standard deviations)."""


def untimed(history: list[dict[str, float]]) -> list[dict[str, float]]:
    """A history without the measured latencies, which differ between runs."""
    return [{k: v for k, v in row.items() if k not in TIMINGS} for row in history]


@pytest.fixture(scope="module")
def digits() -> ImageData:
    return load_dataset("digits")


@pytest.fixture(scope="module")
def small_data(digits: ImageData) -> ImageData:
    """256 training images (four full batches of 64) and 128 validation images."""
    return dataclasses.replace(
        digits,
        train_x=digits.train_x[:256],
        train_y=digits.train_y[:256],
        val_x=digits.val_x[:128],
        val_y=digits.val_y[:128],
    )


def tiny(**overrides: object) -> TrialConfig:
    values: dict[str, object] = {"epochs": 1, "width": 4, "depth": 1, "batch_size": 64}
    values.update(overrides)
    return flat_config(values)


def reference_accuracy(data: ImageData, config: TrialConfig) -> float:
    """The textbook loop: float tensors, a shuffling DataLoader, nn.CrossEntropyLoss and
    torch.optim.Adam, on the same model, split, epochs, batch size, learning rate and seed."""

    def floats(images: torch.Tensor) -> torch.Tensor:
        unit = images.float() / 255.0
        return (unit - data.mean.view(1, -1, 1, 1)) / data.std.view(1, -1, 1, 1)

    torch.manual_seed(config.seed)
    model = build_model(config.model.name, config.model.options, data.input_shape, 10)
    loader = DataLoader(
        TensorDataset(floats(data.train_x), data.train_y),
        batch_size=config.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(config.seed),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    criterion = nn.CrossEntropyLoss()
    for _ in range(config.epochs):
        model.train()
        for images, labels in loader:
            optimizer.zero_grad()
            criterion(model(images), labels).backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        predictions = model(floats(data.val_x)).argmax(dim=1)
    return float((predictions == data.val_y).float().mean())


# --- the fast path against the reference loop ------------------------------------------------


def test_fast_path_reaches_the_accuracy_of_a_reference_loop_on_digits(digits: ImageData) -> None:
    config = flat_config(REFERENCE)
    fast = train(config, data=digits).metrics["accuracy"]
    reference = reference_accuracy(digits, config)
    assert fast > ACCURACY_FLOOR and reference > ACCURACY_FLOOR, (fast, reference)
    assert fast == pytest.approx(reference, abs=TOLERANCE)


# --- the sync guard --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"), [("", None), ("warn", "warn"), ("ERROR", "error"), (" ", None)]
)
def test_sync_debug_setting(monkeypatch: pytest.MonkeyPatch, value: str, expected: str) -> None:
    monkeypatch.setenv(SYNC_DEBUG_ENV, value)
    assert sync_debug_from_env() == expected


def test_sync_debug_setting_refuses_other_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SYNC_DEBUG_ENV, "yes")
    with pytest.raises(ValueError, match=SYNC_DEBUG_ENV):
        sync_debug_from_env()


def test_sync_guard_is_inert_on_the_cpu(
    monkeypatch: pytest.MonkeyPatch, small_data: ImageData
) -> None:
    """The CPU path ignores the setting and stays deterministic under it."""
    plain = train(tiny(epochs=2), data=small_data)
    monkeypatch.setenv(SYNC_DEBUG_ENV, "error")
    watched = train(tiny(epochs=2), data=small_data)
    assert untimed(watched.history) == untimed(plain.history)
    accel = Accelerator(torch.device("cpu"), sync_debug="error")
    with accel.watch_syncs(), accel.allow_syncs():
        assert float(torch.ones(()).sum()) == 1.0


HOST_SYNCING_OPS = {
    "_local_scalar_dense",  # .item(), bool(t), float(t), int(t), `if t > 0:`
    "item",
    "is_nonzero",
    "equal",
    "nonzero",  # output sizes that depend on the data
    "masked_select",
    "bincount",
    "_unique2",
    "unique_dim",
    "unique_consecutive",
    "repeat_interleave",
    "_linalg_check_errors",  # torch.linalg.inv and friends check their result on the host
}
"""aten operations that make the host wait for a GPU, whatever device they run on."""

EVERY_AUGMENTATION = {f"{name}.p": 0.5 for name in PIPELINE_ORDER}


class HostSyncRecorder(TorchDispatchMode):
    """Counts every aten operation, and the host-syncing ones (and boolean-mask indexing,
    which runs ``nonzero``) by name."""

    def __init__(self) -> None:
        super().__init__()
        self.operations = 0
        self.syncing: Counter[str] = Counter()

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        name = func._schema.name.split("::")[-1]
        self.operations += 1
        if name in HOST_SYNCING_OPS or (name.startswith("index") and _bool_index(args)):
            self.syncing[name] += 1
        return func(*args, **(kwargs or {}))


def _bool_index(args: tuple[Any, ...]) -> bool:
    return any(
        isinstance(index, torch.Tensor) and index.dtype == torch.bool
        for arg in args
        if isinstance(arg, list | tuple)
        for index in arg
    )


@pytest.fixture(scope="module")
def rgb_data(digits: ImageData) -> ImageData:
    """512 digits as 3-channel images, so the color augmentations do something."""

    def rgb(images: torch.Tensor) -> torch.Tensor:
        return images.expand(-1, 3, -1, -1).contiguous()

    return dataclasses.replace(
        digits,
        train_x=rgb(digits.train_x[:512]),
        train_y=digits.train_y[:512],
        val_x=rgb(digits.val_x[:128]),
        val_y=digits.val_y[:128],
        mean=digits.mean.repeat(3),
        std=digits.std.repeat(3),
    )


def watched_run(
    monkeypatch: pytest.MonkeyPatch,
    data: ImageData,
    values: dict[str, Any],
    *,
    grouped: bool = False,
    **kwargs: Any,
) -> HostSyncRecorder:
    """Trains two epochs set up as on CUDA (fused or multi-tensor optimizers, policies on
    whole batches unless ``grouped``), recording what runs inside ``watch_syncs`` (epoch 2)."""
    recorder = HostSyncRecorder()

    @contextlib.contextmanager
    def watch_syncs(self: Accelerator) -> Iterator[None]:
        with recorder:
            yield

    build_optimizer = loop.build_optimizer
    monkeypatch.setattr(Accelerator, "watch_syncs", watch_syncs)
    monkeypatch.setattr(
        loop, "build_optimizer", lambda *a, **k: build_optimizer(*a, **{**k, "fused": True})
    )
    monkeypatch.setattr(
        policies, "apply_ops", functools.partial(policies.apply_ops, grouped=grouped)
    )
    config = flat_config({"epochs": 2, "width": 8, "batch_size": 128, **values})
    assert train(config, data=data, **kwargs).epochs_run == 2
    assert recorder.operations > 100  # epoch 2 was watched
    return recorder


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
def test_per_batch_loop_runs_no_host_syncing_operation(
    monkeypatch: pytest.MonkeyPatch, rgb_data: ImageData, values: dict[str, Any]
) -> None:
    """The CPU stand-in for ``AUTOML_SYNC_DEBUG=error`` on a GPU (``test_cuda.py``): the
    per-batch loop runs no operation that would make the host wait for a GPU."""
    assert watched_run(monkeypatch, rgb_data, values).syncing == {}


def test_host_sync_recorder_sees_a_syncing_stop_check(
    monkeypatch: pytest.MonkeyPatch, rgb_data: ImageData
) -> None:
    """The positive control: a stop check reading a tensor, and policies grouped by
    operation (one bincount per round), are caught."""
    flag = torch.zeros(())
    recorder = watched_run(
        monkeypatch,
        rgb_data,
        {"randaugment.p": 1.0},
        grouped=True,
        should_stop=lambda: bool(flag > 0),
    )
    assert recorder.syncing["_local_scalar_dense"] > 0 or recorder.syncing["is_nonzero"] > 0
    assert recorder.syncing["bincount"] > 0


# --- compile fallback ------------------------------------------------------------------------


def failing_compile(error: Exception) -> Callable[..., Any]:
    """A ``torch.compile`` whose compiled model raises ``error`` when called."""

    def compile_model(model: nn.Module, **_: Any) -> Callable[..., Any]:
        def compiled(*args: Any, **kwargs: Any) -> Any:
            raise error

        return compiled

    return compile_model


class _FailingBackward(torch.autograd.Function):
    """Identity whose backward raises, as a lazily compiled backward pass can."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("backward compile failed")


def test_compile_failing_at_the_first_call_trains_eagerly_with_the_same_result(
    monkeypatch: pytest.MonkeyPatch, small_data: ImageData
) -> None:
    eager = train(tiny(epochs=2), data=small_data)
    monkeypatch.setattr(torch, "compile", failing_compile(RuntimeError("no C compiler\nmore")))
    fallen = train(tiny(epochs=2, compile=True), data=small_data)
    assert fallen.notes["compile"] == "failed, trained eagerly: RuntimeError: no C compiler"
    assert untimed(fallen.history) == untimed(eager.history)
    assert all(torch.equal(fallen.state_dict[k], eager.state_dict[k]) for k in eager.state_dict)


def test_compile_refused_outright_trains_eagerly(
    monkeypatch: pytest.MonkeyPatch, small_data: ImageData
) -> None:
    def refuse(model: nn.Module, **_: Any) -> Any:
        raise RuntimeError("torch.compile is not supported on this Python")

    monkeypatch.setattr(torch, "compile", refuse)
    result = train(tiny(compile=True), data=small_data)
    assert result.notes["compile"].startswith("failed, trained eagerly: RuntimeError")
    assert result.epochs_run == 1


def test_compile_failing_in_the_backward_pass_trains_eagerly(
    monkeypatch: pytest.MonkeyPatch, small_data: ImageData
) -> None:
    def compile_model(model: nn.Module, **_: Any) -> Callable[..., Any]:
        return lambda images: _FailingBackward.apply(model(images))

    monkeypatch.setattr(torch, "compile", compile_model)
    eager = train(tiny(epochs=2), data=small_data)
    result = train(tiny(epochs=2, compile=True), data=small_data)
    assert (
        result.notes["compile"] == "failed, trained eagerly: RuntimeError: backward compile failed"
    )
    # Only the first batch's batch-norm statistics saw an extra forward pass.
    assert result.metrics["accuracy"] == pytest.approx(eager.metrics["accuracy"], abs=0.05)


def test_out_of_memory_is_not_taken_for_a_compile_failure(
    monkeypatch: pytest.MonkeyPatch, small_data: ImageData
) -> None:
    """The worker must see it, to run the trial again alone."""
    monkeypatch.setattr(torch, "compile", failing_compile(torch.OutOfMemoryError("oom")))
    with pytest.raises(torch.OutOfMemoryError):
        train(tiny(compile=True), data=small_data)


def test_an_error_of_the_model_itself_propagates() -> None:
    """Compiled or eager, a wrong input shape fails; the eager error is the one raised."""
    model = nn.Linear(4, 2)
    runner = CompiledModel(model)
    object.__setattr__(runner, "_compiled", failing_compile(RuntimeError("dynamo"))(model))
    with pytest.raises(RuntimeError, match="mat1 and mat2"):
        runner(torch.ones(3, 5))
    assert not runner.compiled
    assert runner(torch.ones(3, 4)).shape == (3, 2)
    assert runner.fall_back(RuntimeError("later")) is False  # already eager


def test_compiled_model_follows_train_and_eval() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5))
    runner = CompiledModel(model)
    runner.eval()
    assert not model.training and not model[1].training
    runner.train()
    assert model.training
    assert set(runner.state_dict()) == {f"eager.{key}" for key in model.state_dict()}


def test_every_trial_of_a_worker_compiles_its_own_model(
    monkeypatch: pytest.MonkeyPatch, small_data: ImageData
) -> None:
    """Found by review: trials of one family share ``forward``'s code object, so dynamo's
    per-function recompile limit made a worker's later trials run eagerly while their
    notes said "compiled"."""
    import torch._dynamo  # the limit is dynamo's own setting; lowered so 3 trials reach it

    compiled: list[torch.fx.GraphModule] = []

    def counting_backend(graph: torch.fx.GraphModule, inputs: list[torch.Tensor]) -> Any:
        compiled.append(graph)
        return graph.forward

    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", functools.partial(real_compile, backend=counting_backend))
    with torch._dynamo.config.patch(recompile_limit=2):
        for width in (4, 5, 6):
            before = len(compiled)
            result = train(tiny(width=width, compile=True), data=small_data)
            assert result.notes["compile"] == "compiled"
            assert len(compiled) > before, f"width {width} ran uncompiled"
