"""Refit: ``refit: true`` and ``POST /studies/{id}/refit`` retrain the best configuration on
train + validation, ``/best`` reports it, and the bundle and predict serve its model."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

from automl.data import load_dataset
from automl.store import served_refit, tables
from automl.store.orphan_artifacts import remove_orphan_artifacts
from tests.api.conftest import RunStudy, close_client, make_client, run_to_completion
from tests.conftest import tiny_spec_data
from tests.delivery.trained import png_bytes

Submit = Callable[..., dict[str, Any]]
DIGITS = {"source": "digits", "options": {"test_fraction": 0.2, "seed": 0}}


def test_refit_of_an_unknown_study_is_404(client: TestClient) -> None:
    response = client.post("/studies/999/refit")
    assert response.status_code == 404
    assert response.json()["detail"] == "study 999 not found"


def test_refit_of_an_active_study_is_409(client: TestClient, submit: Submit) -> None:
    study_id = submit()["id"]
    response = client.post(f"/studies/{study_id}/refit")
    assert response.status_code == 409
    assert "is queued" in response.json()["detail"]


def test_refit_of_a_study_without_a_completed_trial_is_409(
    client: TestClient, submit: Submit
) -> None:
    study_id = submit()["id"]
    assert client.post(f"/studies/{study_id}/cancel").status_code == 200
    response = client.post(f"/studies/{study_id}/refit")
    assert response.status_code == 409
    assert response.json()["detail"] == f"study {study_id} has no completed trial to refit"


def test_refit_with_several_objectives_is_refused_at_submit(client: TestClient) -> None:
    data = tiny_spec_data(refit=True)
    del data["objective"]
    data["objectives"] = [{"metric": "accuracy"}, {"metric": "params"}]
    response = client.post("/studies", json=data)
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "refit"]
    assert "no single best trial" in error["msg"]


def test_refit_true_serves_the_refit_model_in_best_bundle_and_predict(
    client: TestClient, submit: Submit, run_study: RunStudy
) -> None:
    study_id = submit(dataset=DIGITS, budget={"n_trials": 2, "max_failed": 0}, refit=True)["id"]
    run_study(study_id)  # trains both trials, evaluates the best, then refits it

    best = client.get(f"/studies/{study_id}/best").json()
    [trial] = best["trials"]
    refit = best["refit"]
    assert refit["state"] == "done", refit
    assert (refit["trial"], refit["epochs"]) == (trial["number"], 1)
    data = load_dataset("digits", DIGITS["options"])
    assert data.test_y is not None
    assert refit["train_samples"] == len(data.train_y) + len(data.val_y)
    assert refit["test_samples"] == len(data.test_y)
    assert set(refit["test_metrics"]) == set(trial["test_metrics"])
    assert sum(map(sum, refit["test_confusion"])) == len(data.test_y)
    # Asking again changes nothing: it is done (200), with the same result.
    again = client.post(f"/studies/{study_id}/refit")
    assert again.status_code == 200 and again.json() == refit

    response = client.get(f"/studies/{study_id}/best/model")
    assert response.status_code == 200, response.text
    assert "-refit-model.zip" in response.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(response.content)) as bundle:
        card = json.loads(bundle.read("model_card.json"))
    assert card["model"]["refit"] is True
    assert card["model"]["trial_number"] == trial["number"]
    assert card["refit"]["epochs"] == 1
    assert card["metrics"]["test"] == refit["test_metrics"]
    assert card["metrics"]["validation"] == trial["metrics"]  # the trial's own, as it says
    # The refit's own mistakes, as its matrix says (a tester: the bundle's card had none).
    matrix, mistakes = refit["test_confusion"], card["metrics"]["test_most_confused"]
    wrong = sum(map(sum, matrix)) - sum(matrix[i][i] for i in range(len(matrix)))
    assert wrong > 0 and sum(m["count"] for m in mistakes) == wrong  # digits: under 100
    assert all(matrix[int(m["true"])][int(m["predicted"])] == m["count"] for m in mistakes)

    image = png_bytes(data.test_x[0])  # type: ignore[index]
    answer = client.post(f"/studies/{study_id}/predict", files=[("files", ("a.png", image))])
    assert answer.status_code == 200, answer.text
    model = answer.json()["model"]
    assert (model["selection"], model["trial_number"]) == ("refit", trial["number"])
    assert "refit" in model["note"]


def test_post_refit_queues_it_for_a_completed_study(
    client: TestClient, submit: Submit, run_study: RunStudy
) -> None:
    study_id = submit(dataset=DIGITS, budget={"n_trials": 1, "max_failed": 0})["id"]
    run_study(study_id)
    store = client.app.state.store  # type: ignore[attr-defined]
    assert client.get(f"/studies/{study_id}/best").json()["refit"] is None
    predicted = client.post(
        f"/studies/{study_id}/predict", files=[("files", ("a.png", png_bytes(_digit())))]
    )
    assert predicted.json()["model"]["selection"] == "best_trial"  # no refit yet

    first = client.post(f"/studies/{study_id}/refit")
    assert first.status_code == 202, first.text
    assert first.json()["state"] == "queued"
    second = client.post(f"/studies/{study_id}/refit")
    assert (second.status_code, second.json()["state"]) == (202, "queued")  # idempotent

    run_study(study_id)  # an idle worker picks the refit up
    refit = client.get(f"/studies/{study_id}/best").json()["refit"]
    assert refit["state"] == "done" and refit["trial"] == 0
    result = served_refit(store, study_id)
    assert result is not None and result.card is not None
    with store.artifacts.open_reader(result.card) as reader:  # the stored card says refit
        assert json.load(reader)["refit"]["trial_number"] == 0


def _digit() -> Any:
    data = load_dataset("digits", DIGITS["options"])
    assert data.test_x is not None
    return data.test_x[0]


def test_the_orphan_sweep_keeps_every_artifact_a_real_study_wrote(
    sqlite_url: str, tmp_path: Path
) -> None:
    """Weights, model cards, the refit's weights and card in the SQL artifact store: each
    is referred to, so a sweep that takes every artifact for a day old removes none."""
    client = make_client(sqlite_url, tmp_path / "unused", artifact_store="sql")
    try:
        data = tiny_spec_data(
            dataset=DIGITS, budget={"n_trials": 2, "max_failed": 0}, refit=True
        ) | {"keep_weights": "all"}
        study_id = client.post("/studies", json=data).json()["id"]
        run_to_completion(client.app, study_id)  # type: ignore[arg-type]
        store = client.app.state.store  # type: ignore[attr-defined]
        written = sorted(store.artifacts.ids_older_than(-1.0))
        assert len(written) >= 6  # 2 trials' weights and cards, the refit's weights and card

        assert remove_orphan_artifacts(store, min_age_s=-1.0) == []

        assert sorted(store.artifacts.ids_older_than(-1.0)) == written
        assert client.get(f"/studies/{study_id}/best/model").status_code == 200
        for number in (0, 1):
            assert client.get(f"/studies/{study_id}/trials/{number}/weights").status_code == 200
    finally:
        close_client(client)


def test_a_refit_whose_weights_are_damaged_is_queued_again(
    client: TestClient, submit: Submit, run_study: RunStudy
) -> None:
    """A reviewer found the damaged refit's message naming `automl refit`, which left a
    done refit as it was: the study could no longer be served at all."""
    study_id = submit(dataset=DIGITS, budget={"n_trials": 1, "max_failed": 0}, refit=True)["id"]
    run_study(study_id)
    store = client.app.state.store  # type: ignore[attr-defined]
    with store.read() as connection:
        weights = connection.scalar(sa.select(tables.refits.c.weights))
    path = store.artifacts.directory / weights
    damaged = bytearray(path.read_bytes())
    damaged[-5] ^= 0x01
    path.write_bytes(bytes(damaged))

    model = client.get(f"/studies/{study_id}/best/model")
    assert model.status_code == 503
    assert "automl refit trains it again" in model.json()["detail"]
    again = client.post(f"/studies/{study_id}/refit")
    assert again.status_code in (200, 202), again.text
    assert again.json()["state"] == "queued"
    run_study(study_id)
    assert client.get(f"/studies/{study_id}/best/model").status_code == 200
