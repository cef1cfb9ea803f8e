"""optuna-dashboard on automl's store (``automl dashboard``'s app, in process): a trained
trial's weights and model card are listed and downloadable through each artifact store,
retention and deletion keep the listing true, and automl's records are protected."""

from __future__ import annotations

import base64
import io
import json
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.client import HTTPConnection, HTTPResponse
from pathlib import Path
from wsgiref.simple_server import make_server

import httpx
import optuna
import pytest
import torch
from optuna.trial import TrialState

from automl.cli import dashboard_commands
from automl.cli.dashboard_commands import dashboard_app
from automl.cli.main import build_parser, main
from automl.config import Settings
from automl.spec import StudySpec
from automl.store import (
    Store,
    attrs,
    delete_study,
    get_frozen_trial,
    get_study,
    load_state_dict,
    open_store,
    save_model_card,
    save_weights,
    submit_study,
)
from automl.store.artifacts import ArtifactNotFound
from tests.conftest import free_port
from tests.delivery.trained import train_study
from tests.store.conftest import end_trial, start_trial

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


@dataclass(frozen=True)
class Seeded:
    """An automl study seeded as a worker leaves it, without training."""

    study_id: int
    done: int
    """Trial id of a COMPLETE trial with weights and a model card."""
    running: int
    """Trial id of a RUNNING trial."""
    artifacts: dict[str, str]
    """``filename -> artifact id`` of the done trial."""


@pytest.fixture
def seeded(store: Store, tiny_spec: Callable[..., StudySpec]) -> Seeded:
    study_id = submit_study(store, tiny_spec()).id
    study = optuna.load_study(
        study_name=store.storage.get_study_name_from_id(study_id), storage=store.storage
    )
    lease, done = start_trial(store, study_id)
    trial = optuna.Trial(study, done)
    weights = save_weights(store.storage, trial, {"w": torch.ones(2)}, store.artifacts)
    card = save_model_card(trial, {"model": {"study_id": study_id}}, store.artifacts)
    end_trial(store, lease, done, 0.9)
    _, running = start_trial(store, study_id)
    artifacts = {"weights.safetensors": weights, "model_card.json": card}
    return Seeded(study_id, done, running, artifacts)


def scratch_study(http: httpx.Client, store: Store, name: str = "scratch") -> tuple[int, int]:
    """A study created in the dashboard and a RUNNING trial of it: ``(study id, trial id)``."""
    created = http.post("/api/studies", json={"study_name": name, "directions": ["minimize"]})
    assert created.status_code == 201, created.text
    study_id = created.json()["study_summary"]["study_id"]
    return study_id, optuna.load_study(study_name=name, storage=store.storage).ask()._trial_id


def upload(http: httpx.Client, url: str, content: bytes = b"hello") -> httpx.Response:
    """Uploads a file as the dashboard's page does."""
    data = "data:text/plain;base64," + base64.standard_b64encode(content).decode()
    return http.post(url, json={"file": data, "filename": "notes.txt"})


def assert_intact(store: Store, seeded: Seeded) -> None:
    """The seeded trial's files are there and automl still loads its weights."""
    for artifact_id in seeded.artifacts.values():
        store.artifacts.open_reader(artifact_id).close()
    assert load_state_dict(get_frozen_trial(store, seeded.study_id, 0), store.artifacts)


def test_an_automl_artifact_cannot_be_deleted_through_another_study(
    store: Store, seeded: Seeded
) -> None:
    # optuna-dashboard removes whatever artifact id it is given, then records the removal
    # on the study and trial of the URL: only the study id used to be checked.
    weights = seeded.artifacts["weights.safetensors"]
    with client(store) as http:
        scratch, _ = scratch_study(http, store)
        by_trial = http.delete(f"/api/artifacts/{scratch}/{seeded.done}/{weights}")
        by_study = http.delete(f"/api/artifacts/{scratch}/{weights}")
        # bottle's int is -?\d+: no such trial or study, but the file would go first.
        no_trial = http.delete(f"/api/artifacts/{scratch}/-1/{weights}")
        no_study = http.delete(f"/api/artifacts/-1/{weights}")
        listed = trial_artifacts_of(http, seeded.study_id, 0)
    assert by_trial.status_code == 403
    assert f"automl's study {seeded.study_id}" in by_trial.json()["reason"]
    assert by_study.status_code == 403
    assert (
        by_study.json()["reason"] == f"artifact {weights} is not one of study {scratch}'s artifacts"
    )
    assert no_trial.status_code == 404
    assert no_trial.json()["reason"] == "no trial -1 (deleted?)"
    assert no_study.status_code == 404
    assert listed == seeded.artifacts
    assert_intact(store, seeded)


def test_the_dashboard_deletes_an_artifact_only_through_the_study_or_trial_that_records_it(
    store: Store,
) -> None:
    with client(store) as http:
        study_id, trial_id = scratch_study(http, store)
        other, other_trial = scratch_study(http, store, "other")
        on_trial = upload(http, f"/api/artifacts/{study_id}/{trial_id}").json()["artifact_id"]
        on_study = upload(http, f"/api/artifacts/{study_id}").json()["artifact_id"]
        refused = {
            "other study": http.delete(f"/api/artifacts/{other}/{trial_id}/{on_trial}"),
            "other trial": http.delete(f"/api/artifacts/{study_id}/{other_trial}/{on_trial}"),
            "as the study's": http.delete(f"/api/artifacts/{study_id}/{on_trial}"),
            "as the trial's": http.delete(f"/api/artifacts/{study_id}/{trial_id}/{on_study}"),
            "of another study": http.delete(f"/api/artifacts/{other}/{on_study}"),
        }
        reasons = {case: answer.json()["reason"] for case, answer in refused.items()}
        for artifact_id in (on_trial, on_study):
            store.artifacts.open_reader(artifact_id).close()

        by_trial = http.delete(f"/api/artifacts/{study_id}/{trial_id}/{on_trial}")
        by_study = http.delete(f"/api/artifacts/{study_id}/{on_study}")
        again = http.delete(f"/api/artifacts/{study_id}/{on_study}")
        # Older optuna-dashboard releases recorded a trial's upload on its study.
        store.artifacts.write("0123-abcd", io.BytesIO(b"old"))
        store.storage.set_study_system_attr(
            study_id,
            f"dashboard:artifacts:{trial_id}:0123-abcd",
            json.dumps({"artifact_id": "0123-abcd", "filename": "old.txt"}),
        )
        deleted_legacy = http.delete(f"/api/artifacts/{study_id}/{trial_id}/0123-abcd")

    assert {case: answer.status_code for case, answer in refused.items()} == dict.fromkeys(
        refused, 403
    )
    assert reasons["other study"] == f"trial {trial_id} is not a trial of study {other}"
    assert reasons["other trial"] == f"trial {other_trial} is not a trial of study {study_id}"
    assert reasons["as the study's"] == (
        f"artifact {on_trial} is not one of study {study_id}'s artifacts"
    )
    assert reasons["as the trial's"] == (
        f"artifact {on_study} is not one of trial {trial_id}'s artifacts"
    )
    assert (by_trial.status_code, by_study.status_code) == (204, 204)
    assert again.status_code == 403, "a deleted artifact's record is no record"
    assert deleted_legacy.status_code == 204, deleted_legacy.text
    for artifact_id in (on_trial, on_study, "0123-abcd"):
        with pytest.raises(ArtifactNotFound):
            store.artifacts.open_reader(artifact_id)


def test_the_dashboard_refuses_to_write_automl_trials_user_attributes(
    store: Store, seeded: Seeded
) -> None:
    with client(store) as http:
        _, scratch_trial = scratch_study(http, store)
        answers = [
            http.post(
                f"/api/trials/{trial_id}/user-attrs", json={"user_attrs": {attrs.WEIGHTS: ""}}
            )
            for trial_id in (seeded.running, seeded.done, scratch_trial)
        ]
    assert [answer.status_code for answer in answers] == [403, 403, 204]
    assert "automl.*" in answers[0].json()["reason"]
    assert attrs.WEIGHTS not in store.storage.get_trial(seeded.running).user_attrs
    assert (
        store.storage.get_trial(seeded.done).user_attrs[attrs.WEIGHTS]
        == (seeded.artifacts["weights.safetensors"])
    )
    assert_intact(store, seeded)


def test_the_dashboard_refuses_preferences_and_uploads_on_automl_studies(
    store: Store, seeded: Seeded
) -> None:
    study_id = seeded.study_id
    with client(store) as http:
        scratch, _ = scratch_study(http, store)
        # optuna-dashboard would complete the RUNNING trial (number 1) with the value 0.
        preference = http.post(
            f"/api/studies/{study_id}/preference",
            json={"mode": "ChooseWorst", "candidates": [0, 1], "clicked": 0},
        )
        uploads = [
            upload(http, f"/api/artifacts/{study_id}"),
            upload(http, f"/api/artifacts/{study_id}/{seeded.running}"),
            upload(http, f"/api/artifacts/{scratch}/{seeded.running}"),
        ]
    assert preference.status_code == 403
    assert "made-up values" in preference.json()["reason"]
    assert [answer.status_code for answer in uploads] == [403, 403, 403]
    assert "automl delete" in uploads[0].json()["reason"]
    assert store.storage.get_trial(seeded.running).state == TrialState.RUNNING
    recorded = [
        *store.storage.get_trial_system_attrs(seeded.running),
        *store.storage.get_study_system_attrs(study_id),
    ]
    assert not [key for key in recorded if key.startswith("artifacts:")]


def test_notes_and_feedback_settings_stay_allowed_on_automl_studies(
    store: Store, seeded: Seeded
) -> None:
    study_id = seeded.study_id
    with client(store) as http:
        answers = [
            http.put(f"/api/studies/{study_id}/note", json={"version": 1, "body": "study"}),
            http.put(
                f"/api/studies/{study_id}/{seeded.done}/note", json={"version": 1, "body": "x"}
            ),
            http.put(
                f"/api/studies/{study_id}/preference_feedback_component",
                json={"output_type": "note"},
            ),
        ]
    assert [answer.status_code for answer in answers] == [204, 204, 204]
    assert_intact(store, seeded)


@contextmanager
def served(store: Store) -> Iterator[Callable[..., HTTPResponse]]:
    """The dashboard on a real HTTP server (as ``automl dashboard`` serves it); yields a
    function that sends one raw request, method and path exactly as given."""
    server = make_server(
        "127.0.0.1",
        0,
        dashboard_app(store),
        server_class=dashboard_commands._ThreadingServer,
        handler_class=dashboard_commands._QuietHandler,
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    connections: list[HTTPConnection] = []

    def send(method: str, path: str, body: object = None) -> HTTPResponse:
        connection = HTTPConnection("127.0.0.1", server.server_port, timeout=30)
        connections.append(connection)
        payload = None if body is None else json.dumps(body)
        connection.request(method, path, payload, {"Content-Type": "application/json"})
        return connection.getresponse()

    try:
        yield send
    finally:
        for connection in connections:
            connection.close()
        server.shutdown()
        server.server_close()
        thread.join()


def test_the_guard_reads_the_method_and_path_as_the_dashboards_router_does(
    store: Store, seeded: Seeded
) -> None:
    # bottle routes a method whatever its case and drops what does not decode as UTF-8.
    with served(store) as send:
        lower_case = send("delete", f"/api/studies/{seeded.study_id}")
        undecodable = send("POST", f"/api/trials/{seeded.running}/tell%FF", {"state": "Fail"})
        slashes = send("POST", f"/api/trials/{seeded.running}/tell//", {"state": "Fail"})
        # bottle's ``$`` also matches before a final newline (found by a reviewer).
        newline = send("DELETE", f"/api/studies/{seeded.study_id}%0A")
        answers = [lower_case, undecodable, slashes, newline]
        statuses = [answer.status for answer in answers]
        reasons = [json.loads(answer.read())["reason"] for answer in answers]
    assert statuses == [403, 403, 403, 400]
    assert "automl delete" in reasons[0]
    assert reasons[3] == "control characters in the path"
    assert store.storage.get_study_name_from_id(seeded.study_id)
    assert store.storage.get_trial(seeded.running).state == TrialState.RUNNING
    assert_intact(store, seeded)


def trial_artifacts_of(http: httpx.Client, study_id: int, number: int) -> dict[str, str]:
    """``filename -> artifact id`` of one trial of the study, as the dashboard lists them."""
    detail = http.get(f"/api/studies/{study_id}").json()
    (trial,) = [trial for trial in detail["trials"] if trial["number"] == number]
    return {artifact["filename"]: artifact["artifact_id"] for artifact in trial["artifacts"]}


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

    frozen = get_frozen_trial(store, study_id, kept[0])
    link = f"/artifacts/{study_id}/{frozen._trial_id}/{listed[kept[0]]['weights.safetensors']}"
    with client(store) as http:
        served = http.get(link, headers={"Origin": "http://elsewhere.example"})
    # A tester: optuna-dashboard sent "Access-Control-Allow-Origin: *", so a page of any
    # site could read the weights through the browser of whoever opened it.
    assert served.status_code == 200 and "access-control-allow-origin" not in served.headers

    delete_study(store, study_id)
    for files in listed.values():
        for artifact_id in files.values():
            with pytest.raises(ArtifactNotFound):
                store.artifacts.open_reader(artifact_id)
    with client(store) as http:
        # A tester: a link kept from before the delete was a 500 and a traceback.
        stale = http.get(link)
        note = http.put(f"/api/studies/{study_id}/note", json={"version": 1, "body": "x"})
        told = http.post(f"/api/trials/{frozen._trial_id}/tell", json={"state": "Fail"})
    assert (stale.status_code, stale.json()["reason"]) == (
        404,
        f"no trial {frozen._trial_id} (deleted?)",
    )
    assert (note.status_code, note.json()["reason"]) == (404, f"no study {study_id} (deleted?)")
    assert (told.status_code, told.json()["reason"]) == (
        404,
        f"no trial {frozen._trial_id} (deleted?)",
    )


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
