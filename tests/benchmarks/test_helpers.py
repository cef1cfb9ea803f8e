"""The benchmarks' stand-ins for product code still fit the product's interfaces (a
benchmark that no longer runs is found here, not when its numbers are next needed)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from automl.data.decode import Preprocess, decode_image
from automl.delivery.export import ChildTracer, ModelSource
from automl.models import build_model
from automl.train import TrainResult
from automl.train.trial_config import TrialConfig

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _module(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """A benchmark script as a module (its siblings importable, as when it runs)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_sleep_worker_returns_a_train_result_the_worker_stores(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sleep_train = _module("sleep_worker", monkeypatch).make_sleep_train(0.02)
    config = TrialConfig.model_validate({"dataset": {"source": "digits"}, "epochs": 2})
    reports: list[int] = []

    result = sleep_train(config, lambda epoch, metrics: bool(reports.append(epoch)))

    assert isinstance(result, TrainResult)
    assert reports == [1, 2] and result.epochs_run == 2 and not result.pruned
    assert result.most_confused == [] and result.dataset is not None


def test_the_growth_benchmark_stores_trials_as_workers_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    growth = _module("bench_growth", monkeypatch)
    few, many = (growth.trial_attrs(0, classes, 0.5, 5) for classes in (10, 1000))
    assert "confusion" in few and "confusion" not in many
    assert len(many["most_confused"]) == 100
    assert len(growth.trial_attrs(0, 10, 0.5, 200)["history"]) == 200


@pytest.mark.filterwarnings("ignore:`torch.jit")
def test_the_bundle_memory_benchmark_measures_both_tracers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bench = _module("bench_bundle_memory", monkeypatch)
    model = build_model("cnn", {}, (3, 32, 32), 10)
    tracer = ChildTracer()
    try:
        sides = [
            bench.measure(trace, model, (3, 32, 32), 1)
            for trace in (
                bench.in_child(tracer, ModelSource(build_model, ("cnn", {}, (3, 32, 32), 10))),
                bench.export_torchscript,
            )
        ]
    finally:
        tracer.close()
    for side in sides:
        assert set(side) == {"mb_per_trace", "first_s", "median_s"} and side["median_s"] > 0


@pytest.mark.parametrize("kind", ["gray16-transparent", "rgba"])
def test_the_decode_memory_benchmarks_sides_decode_the_same_pixels(
    kind: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bench = _module("bench_decode_memory", monkeypatch)
    path = str(bench.write_image(kind, 50, tmp_path))

    textbook = bench.decode_textbook(path)

    assert textbook.shape == (3, 64, 64)
    assert (textbook == decode_image(path, Preprocess(64, 64))).all()
    assert len(set(textbook.flatten().tolist())) > 1  # transparent and opaque parts


def test_the_lean_cache_benchmark_reads_the_same_trials_on_both_sides(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bench = _module("bench_lean_cache", monkeypatch)
    url = f"sqlite:///{tmp_path / 'lean.db'}"
    bench.populate(url, trials=3, epochs=4)

    optuna_side, lean_side = (bench.read_once(side, url) for side in ("optuna", "lean"))

    assert optuna_side["trials"] == lean_side["trials"] == 3
    assert optuna_side["seconds"] > 0 and lean_side["seconds"] > 0
    assert optuna_side["later_ms"] > 0 and lean_side["later_ms"] > 0
