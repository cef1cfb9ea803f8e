"""When a run may replay its updates as a CUDA graph (the replay itself: test_cuda.py)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from automl.train import loop, train
from automl.train.graphs import GRAPHS_ENV, graph_blocker, graphs_enabled
from automl.train.hyperparameters import flat_config
from automl.train.losses import LOSSES
from automl.train.optim import constant_learning_rate

CUDA = torch.device("cuda")
ELIGIBLE = {"scaled": False, "compiled": False, "constant_lr": True}


def test_a_plain_cuda_run_can_replay() -> None:
    assert graph_blocker(CUDA, **ELIGIBLE) is None


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"scaled": True}, "fp16 gradient scaling"),
        ({"compiled": True}, "compile: true"),
        ({"constant_lr": False}, "the learning rate changes during training"),
    ],
)
def test_what_rules_a_graph_out(change: dict[str, bool], reason: str) -> None:
    assert graph_blocker(CUDA, **{**ELIGIBLE, **change}) == reason


def test_the_cpu_never_replays() -> None:
    assert graph_blocker(torch.device("cpu"), **ELIGIBLE) == "not a CUDA device"
    result = train(flat_config({"epochs": 1, "width": 4}))
    assert "cuda_graph" not in result.notes


@pytest.mark.parametrize("value", ["0", "false", "OFF", " no "])
def test_the_environment_turns_graphs_off(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(GRAPHS_ENV, value)
    assert not graphs_enabled()
    assert graph_blocker(CUDA, **ELIGIBLE) == f"{GRAPHS_ENV} is off"


def test_graphs_are_on_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(GRAPHS_ENV, raising=False)
    assert graphs_enabled()
    monkeypatch.setenv(GRAPHS_ENV, "1")
    assert graphs_enabled()


def test_a_plugin_in_the_update_rules_a_graph_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """A plugin may keep per-step state on the host, which a graph would freeze."""
    builtin = LOSSES.get("cross_entropy")
    plugin = dataclasses.replace(builtin, name="mine", source="my-losses")
    monkeypatch.setitem(LOSSES._entries, "mine", plugin)
    assert loop._plugin_parts(flat_config({"epochs": 1})) == []
    parts = loop._plugin_parts(flat_config({"epochs": 1, "loss": "mine"}))
    assert parts == ["loss 'mine'"]
    reason = graph_blocker(CUDA, **ELIGIBLE, plugins=parts)
    assert reason == "loss 'mine' is a plugin (it may keep per-step state on the host)"


def test_constant_rate_means_the_constant_schedule_without_warmup_steps() -> None:
    assert constant_learning_rate("constant", total_steps=30, warmup_steps=0)
    assert not constant_learning_rate("constant", total_steps=30, warmup_steps=3)
    assert not constant_learning_rate("cosine", total_steps=30, warmup_steps=0)
    assert constant_learning_rate("constant", total_steps=1, warmup_steps=5)  # no room


@pytest.mark.parametrize("value", ["maybe", "2", "enabled"])
def test_a_bad_value_is_refused_with_its_name(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(GRAPHS_ENV, value)
    with pytest.raises(ValueError, match=f"{GRAPHS_ENV} must be 1 or 0 .*not '{value}'"):
        graphs_enabled()
