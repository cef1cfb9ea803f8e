"""optuna-dashboard on automl's store (``automl dashboard``'s app, in process): a trained
trial's weights and model card are listed and downloadable through each artifact store,
retention and deletion keep the listing true, and automl's records are protected."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import optuna
import pytest

from automl.cli import dashboard_commands
from automl.cli.dashboard_commands import dashboard_app
from automl.cli.main import build_parser, main
from automl.config import Settings
from automl.store import (
    Store,
    attrs,
    delete_study,
    get_frozen_trial,
    get_study,
    load_state_dict,
    open_store,
)
from automl.store.artifacts import ArtifactNotFound
from tests.conftest import free_port
from tests.delivery.trained import train_study

FAST = {"epochs": 1, "width": 8, "depth": 1, "batch_size": 128, "lr": 0.01, "optimizer": "adam"}


@pytest.fixture(
    params=[
        ("sqlite", "folder"),
        ("sqlite", "sql"),
        pytest.param(("postgres", "auto"), marks=pytest.mark.postgres, id="postgres-sql"),
    ],
    ids=lambda param: "-".join(param) if isinstance(param, tuple) else param,
)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A store on each database with each artifact store the dashboard must read."""
    database, kind = request.param
    url = request.getfixturevalue("sqlite_url" if database == "sqlite" else "postgres_url")
    opened = open_store(url, artifact_store=kind, artifacts_dir=tmp_path / "artifacts")
    yield opened
    opened.close()


def client(store: Store) -> httpx.Client:
    """An HTTP client of the dashboard app, in process."""
    return httpx.Client(
        transport=httpx.WSGITransport(app=dashboard_app(store)), base_url="http://dashboard"
    )


def trial_artifacts(http: httpx.Client, study_id: int) -> dict[str, str]:
    """``filename -> artifact id`` of the study's only trial, as the dashboard lists them."""
    detail = http.get(f"/api/studies/{study_id}").json()
    (trial,) = detail["trials"]
    return {artifact["filename"]: artifact["artifact_id"] for artifact in trial["artifacts"]}


def test_the_dashboard_serves_a_trials_weights_and_model_card(store: Store) -> None:
    study_id = train_study(store, fixed=FAST)
    frozen = get_frozen_trial(store, study_id, 0)
    with client(store) as http:
        listed = trial_artifacts(http, study_id)
        assert set(listed) == {"weights.safetensors", "model_card.json"}
        assert listed["weights.safetensors"] == frozen.user_attrs[attrs.WEIGHTS]
        base = f"/artifacts/{study_id}/{frozen._trial_id}"
        weights = http.get(f"{base}/{listed['weights.safetensors']}")
        card = http.get(f"{base}/{listed['model_card.json']}")
    assert weights.status_code == 200
    with store.artifacts.open_reader(listed["weights.safetensors"]) as reader:
        assert weights.content == reader.read()
    assert card.status_code == 200
    assert card.headers["content-type"] == "application/json"
    content = card.json()
    assert content["model"]["study_id"] == study_id
    assert content["model"]["trial_number"] == 0
    assert content["objectives"][0]["value"] == pytest.approx(frozen.values[0])
    assert content["input"]["shape"] == [1, 8, 8]
    assert content["metrics"]["validation"] == frozen.user_attrs[attrs.METRICS]
    assert load_state_dict(frozen, store.artifacts)  # automl still reads what it served


def test_the_dashboard_refuses_to_delete_rename_or_tell_automl_studies(store: Store) -> None:
    study_id = train_study(store, fixed=FAST)
    trial_id = get_frozen_trial(store, study_id, 0)._trial_id
    with client(store) as http:
        deleted = http.delete(f"/api/studies/{study_id}")
        renamed = http.post(f"/api/studies/{study_id}/rename", json={"study_name": "other"})
        told = http.post(f"/api/trials/{trial_id}/tell", json={"state": "Fail"})
        listed = trial_artifacts(http, study_id)
    assert deleted.status_code == 403
    assert "automl delete" in deleted.json()["reason"]
    assert renamed.status_code == 403
    assert told.status_code == 403
    assert get_study(store, study_id).name == "served"
    assert set(listed) == {"weights.safetensors", "model_card.json"}
    for artifact_id in listed.values():
        store.artifacts.open_reader(artifact_id).close()


def test_studies_created_in_the_dashboard_are_its_to_tell_rename_and_delete(
    store: Store,
) -> None:
    automl_study = train_study(store, fixed=FAST)
    with client(store) as http:
        created = http.post(
            "/api/studies", json={"study_name": "by-hand", "directions": ["minimize"]}
        )
        assert created.status_code == 201, created.text
        study_id = created.json()["study_summary"]["study_id"]
        trial = optuna.load_study(study_name="by-hand", storage=store.storage).ask()
        told = http.post(f"/api/trials/{trial._trial_id}/tell", json={"state": "Fail"})
        renamed = http.post(f"/api/studies/{study_id}/rename", json={"study_name": "renamed"})
        deleted = http.delete(f"/api/studies/{renamed.json()['study_id']}")
    assert (told.status_code, renamed.status_code, deleted.status_code) == (204, 201, 204)
    assert [s.study_name for s in optuna.get_all_study_summaries(store.storage)] == ["served"]
    assert get_study(store, automl_study).name == "served"


def test_the_dashboard_refuses_to_delete_a_trials_weights(store: Store) -> None:
    # optuna-dashboard removes the file, then fails to mark the finished trial (a 500):
    # the best model's weights would be gone while automl still points at them.
    study_id = train_study(store, fixed=FAST)
    trial_id = get_frozen_trial(store, study_id, 0)._trial_id
    with client(store) as http:
        listed = trial_artifacts(http, study_id)
        for artifact_id in listed.values():
            deleted = http.delete(f"/api/artifacts/{study_id}/{trial_id}/{artifact_id}")
            assert deleted.status_code == 403
            assert "keep_weights" in deleted.json()["reason"]
        by_study = http.delete(f"/api/artifacts/{study_id}/{listed['model_card.json']}")
        assert by_study.status_code == 403
        assert trial_artifacts(http, study_id) == listed
    for artifact_id in listed.values():
        store.artifacts.open_reader(artifact_id).close()


def test_retention_keeps_the_card_and_deletion_removes_every_artifact(store: Store) -> None:
    study_id = train_study(
        store,
        fixed=FAST,
        keep_weights=1,
        budget={"n_trials": 2, "max_failed": 0},
        params={"weight_decay": {"type": "categorical", "choices": [0.0, 0.5]}},
        sampler={"name": "grid"},
    )
    with client(store) as http:
        detail = http.get(f"/api/studies/{study_id}").json()
    listed = {
        trial["number"]: {
            artifact["filename"]: artifact["artifact_id"] for artifact in trial["artifacts"]
        }
        for trial in detail["trials"]
    }
    kept = [number for number, files in listed.items() if "weights.safetensors" in files]
    assert len(kept) == 1, "keep_weights: 1 keeps one trial's weights"
    assert all("model_card.json" in files for files in listed.values())
    dropped = get_frozen_trial(store, study_id, 1 - kept[0])
    assert attrs.WEIGHTS_REMOVED in dropped.user_attrs

    delete_study(store, study_id)
    for files in listed.values():
        for artifact_id in files.values():
            with pytest.raises(ArtifactNotFound):
                store.artifacts.open_reader(artifact_id)


def test_dashboard_command_line() -> None:
    parser = build_parser()
    args = parser.parse_args(["dashboard", "--host", "0.0.0.0", "--port", "9000"])
    assert (args.command, args.dashboard_host, args.dashboard_port) == (
        "dashboard",
        "0.0.0.0",
        9000,
    )
    up = parser.parse_args(["up", "--dashboard", "--dashboard-port", "9001"])
    assert (up.dashboard, up.dashboard_port) == (True, 9001)
    with pytest.raises(SystemExit):
        parser.parse_args(["dashboard", "--port", "70000"])


@pytest.mark.parametrize(("host", "warned"), [("0.0.0.0", True), ("127.0.0.1", False)])
def test_the_dashboard_warns_at_start_when_others_can_reach_it(
    host: str,
    warned: bool,
    sqlite_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for field in Settings.model_fields:
        monkeypatch.delenv(f"AUTOML_{field.upper()}", raising=False)
    monkeypatch.setenv("AUTOML_STORAGE", sqlite_url)
    monkeypatch.setenv("AUTOML_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    served: list[str] = []
    # The real command binds the port; only serving forever is left out.
    monkeypatch.setattr(
        dashboard_commands._ThreadingServer,
        "serve_forever",
        lambda server, *args: served.append(server.server_address[0]),
    )

    with caplog.at_level(logging.WARNING, logger="automl.dashboard"):
        code = main(["dashboard", "--host", host, "--port", str(free_port())])

    assert code == 0
    assert served == [host]
    warnings = [r.getMessage() for r in caplog.records if r.name == "automl.dashboard"]
    if warned:
        assert len(warnings) == 1, warnings
        assert "no authentication" in warnings[0] and "every project" in warnings[0]
        assert host in warnings[0]
    else:
        assert warnings == []
