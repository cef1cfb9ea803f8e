"""Tests of ``GET /registries``: generated from the registries themselves."""

from __future__ import annotations

from fastapi.testclient import TestClient

from automl.catalog import REGISTRIES


def test_registries_lists_every_entry_of_every_registry(client: TestClient) -> None:
    response = client.get("/registries")
    assert response.status_code == 200
    body = response.json()
    assert {h["name"] for h in body["hyperparameters"]} >= {"lr", "epochs", "model", "optimizer"}
    for kind, registry in REGISTRIES.items():
        assert [entry["name"] for entry in body["registries"][kind]] == registry.names()
    assert body["plugin_errors"] == {}


def test_one_registry_and_unknown_kind(client: TestClient) -> None:
    optimizers = client.get("/registries/optimizers").json()
    sgd = next(entry for entry in optimizers if entry["name"] == "sgd")
    momentum = next(option for option in sgd["options"] if option["name"] == "momentum")
    assert momentum == {
        "name": "momentum",
        "type": "float",
        "default": 0.9,
        "choices": None,
        "range": {"ge": 0.0, "lt": 1.0},
        "description": "Momentum factor.",
        "required": False,
        "applies_when": {"optimizer": "sgd"},
        "spec_name": None,
    }
    missing = client.get("/registries/widgets")
    assert missing.status_code == 404
    assert "no registry 'widgets'" in missing.json()["detail"]


def test_metrics_carry_their_direction_and_bounds(client: TestClient) -> None:
    metrics = {entry["name"]: entry for entry in client.get("/registries/metrics").json()}
    assert (metrics["macro_f1"]["direction"], metrics["macro_f1"]["bounds"]) == (
        "maximize",
        [0.0, 1.0],
    )
    assert metrics["latency_ms"]["bounds"] == [0.0, None]
    sgd = next(e for e in client.get("/registries/optimizers").json() if e["name"] == "sgd")
    assert sgd["direction"] is None and sgd["bounds"] is None
