"""Lifecycle endpoints: idempotent submit, extend, resume, re-run, enqueue, delete."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

import automl.worker.runner
from tests.api.conftest import RunStudy
from tests.conftest import tiny_spec_data

Submit = Callable[..., dict[str, Any]]


def test_idempotency_key_returns_the_first_study(client: TestClient) -> None:
    headers = {"Idempotency-Key": "submit-1"}
    first = client.post("/studies", json=tiny_spec_data(), headers=headers)
    again = client.post("/studies", json=tiny_spec_data(), headers=headers)
    other = client.post("/studies", json=tiny_spec_data(name="x"), headers=headers)

    assert first.status_code == again.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    assert "Idempotent-Replayed" not in first.headers
    assert again.headers["Idempotent-Replayed"] == "true"  # a client can tell the repeat
    assert client.get("/studies").json()["count"] == 1
    assert other.status_code == 409
    assert "different spec" in other.json()["detail"]


def test_an_empty_idempotency_key_is_refused(client: TestClient) -> None:
    """Found by a tester: an empty key counted as none, so each retry made a study."""
    for _ in range(2):
        response = client.post("/studies", json=tiny_spec_data(), headers={"Idempotency-Key": ""})
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]
    assert client.get("/studies").json()["count"] == 0


def test_extend_then_cancel_then_resume(client: TestClient, submit: Submit) -> None:
    study_id = submit(budget={"n_trials": 2})["id"]

    extended = client.post(f"/studies/{study_id}/extend", json={"add_trials": 3})
    assert extended.status_code == 200
    assert (extended.json()["n_trials"], extended.json()["counts"]["waiting"]) == (5, 5)

    cancelled = client.post(f"/studies/{study_id}/cancel").json()
    assert (cancelled["status"], cancelled["counts"]["waiting"]) == ("cancelled", 0)
    refused = client.post(f"/studies/{study_id}/extend", json={"add_trials": 1})
    assert refused.status_code == 409

    resumed = client.post(f"/studies/{study_id}/resume", json={"add_trials": 1})
    assert resumed.status_code == 200
    assert (resumed.json()["status"], resumed.json()["n_trials"]) == ("queued", 6)
    assert client.post(f"/studies/{study_id}/resume").status_code == 409  # already active


@pytest.mark.parametrize(
    ("path", "body", "loc"),
    [
        ("extend", {"add_trials": 0}, ["body", "add_trials"]),
        ("extend", {}, ["body", "add_trials"]),
        ("resume", {"add_trials": -1}, ["body", "add_trials"]),
        ("resume", {"add": 1}, ["body", "add"]),
        ("trials", {"configs": []}, ["body", "configs"]),
        ("trials", {"configs": [{"lr": 5}]}, ["body", "configs", 0, "lr"]),
    ],
)
def test_bad_lifecycle_bodies_are_422_with_the_field(
    client: TestClient, submit: Submit, path: str, body: dict[str, Any], loc: list[Any]
) -> None:
    study_id = submit()["id"]
    response = client.post(f"/studies/{study_id}/{path}", json=body)
    assert response.status_code == 422, response.text
    assert loc in [error["loc"] for error in response.json()["detail"]]


def test_enqueue_runs_the_given_configs_first(
    client: TestClient, submit: Submit, run_study: RunStudy
) -> None:
    study_id = submit(budget={"n_trials": 2, "max_failed": 0})["id"]
    configs = [{"optimizer": "adam", "lr": 0.002}, {"optimizer": "sgd", "lr": 0.003}]

    response = client.post(f"/studies/{study_id}/trials", json={"configs": configs})
    assert response.status_code == 201
    assert response.json()["counts"]["waiting"] == 2
    over = client.post(f"/studies/{study_id}/trials", json={"configs": configs[:1]})
    assert over.status_code == 409
    assert "extend it first" in over.json()["detail"]

    run_study(study_id)
    trials = client.get(f"/studies/{study_id}/trials").json()["data"]
    assert [{k: t["params"][k] for k in ("optimizer", "lr")} for t in trials] == configs


def test_a_specs_enqueued_configs_run_first_and_bad_ones_are_422(
    client: TestClient, submit: Submit, run_study: RunStudy
) -> None:
    configs = [{"optimizer": "sgd", "lr": 0.004, "momentum": 0.7}, {"lr": 0.002}]
    study_id = submit(budget={"n_trials": 3, "max_failed": 0}, enqueue=configs)["id"]
    run_study(study_id)
    trials = client.get(f"/studies/{study_id}/trials").json()["data"]
    assert trials[0]["params"] == configs[0]
    assert trials[1]["params"]["lr"] == 0.002 and len(trials) == 3

    bad = tiny_spec_data(name="bad", enqueue=[{"lr": 0.002}, {"lr": 5, "width": 16}])
    response = client.post("/studies", json=bad)
    assert response.status_code == 422, response.text
    assert [error["loc"] for error in response.json()["detail"]] == [
        ["body", "enqueue", 1, "lr"],
        ["body", "enqueue", 1, "width"],
    ]
    assert "outside [0.001, 0.01]" in response.json()["detail"][0]["msg"]


def test_rerun_failed_trials(
    client: TestClient, submit: Submit, run_study: RunStudy, monkeypatch: pytest.MonkeyPatch
) -> None:
    study_id = submit(budget={"n_trials": 2, "max_failed": 0})["id"]
    real_train = automl.worker.runner.train

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(automl.worker.runner, "train", broken)
    run_study(study_id)
    failed = client.get(f"/studies/{study_id}").json()
    assert (failed["status"], failed["counts"]["fail"]) == ("failed", 1)

    monkeypatch.setattr(automl.worker.runner, "train", real_train)
    response = client.post(f"/studies/{study_id}/rerun-failed")
    assert response.status_code == 200
    assert response.json()["status"] == "queued"
    run_study(study_id)
    done = client.get(f"/studies/{study_id}").json()
    assert (done["status"], done["counts"]["complete"]) == ("completed", 2)
    assert client.post(f"/studies/{study_id}/rerun-failed").status_code == 409


def test_delete_an_ended_study(client: TestClient, submit: Submit, run_study: RunStudy) -> None:
    study_id = submit(budget={"n_trials": 1, "max_failed": 0})["id"]
    assert client.delete(f"/studies/{study_id}").status_code == 409  # still queued
    run_study(study_id)
    assert client.get(f"/studies/{study_id}/trials/0/weights").status_code == 200

    response = client.delete(f"/studies/{study_id}")

    assert response.status_code == 204
    assert client.get(f"/studies/{study_id}").status_code == 404
    assert client.delete(f"/studies/{study_id}").status_code == 404
    assert client.get("/studies").json()["count"] == 0


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/studies/42/extend", {"add_trials": 1}),
        ("POST", "/studies/42/resume", {"add_trials": 1}),
        ("POST", "/studies/42/rerun-failed", None),
        ("POST", "/studies/42/trials", {"configs": [{}]}),
        ("DELETE", "/studies/42", None),
    ],
)
def test_lifecycle_of_unknown_study_is_404(
    client: TestClient, method: str, path: str, body: dict[str, Any] | None
) -> None:
    response = client.request(method, path, json=body)
    assert response.status_code == 404
    assert response.json() == {"detail": "study 42 not found"}
