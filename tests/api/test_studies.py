"""The REST API over a real SQLite store: submit, list, inspect, cancel, best, weights."""

from __future__ import annotations

import gzip
import json
import re
import shlex
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch
import yaml
from fastapi.testclient import TestClient

import automl.worker.runner
from automl.store import attrs, get_frozen_trial
from tests.api.conftest import COMPLETED_SPEC, RunStudy, close_client, make_client
from tests.conftest import tiny_spec_data

Submit = Callable[..., dict[str, Any]]


def _only_error(response: Any) -> dict[str, Any]:
    """The single error item of a 422 response."""
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, list)
    assert len(detail) == 1, detail
    return detail[0]


# --- submit ----------------------------------------------------------------------------------


def test_post_json_creates_queued_study(client: TestClient) -> None:
    response = client.post("/studies", json=tiny_spec_data())

    assert response.status_code == 201, response.text
    study = response.json()
    assert response.headers["location"] == f"/studies/{study['id']}"
    assert study["name"] == "tiny"
    assert study["status"] == "queued"
    assert study["n_trials"] == 3
    assert study["counts"]["waiting"] == 3
    assert study["counts"]["finished"] == 0
    assert study["best_value"] is None
    assert study["directions"] == ["maximize"]
    assert study["metrics"] == ["accuracy"]
    assert study["spec"]["params"]["lr"]["high"] == pytest.approx(1e-2)


def test_post_yaml_creates_queued_study(client: TestClient) -> None:
    body = yaml.safe_dump(tiny_spec_data(name="from-yaml", budget={"n_trials": 2}))

    response = client.post("/studies", content=body, headers={"content-type": "application/yaml"})

    assert response.status_code == 201, response.text
    study = response.json()
    assert response.headers["location"] == f"/studies/{study['id']}"
    assert study["name"] == "from-yaml"
    assert study["status"] == "queued"
    assert study["counts"]["waiting"] == study["n_trials"] == 2


def test_post_same_name_twice_gets_distinct_names(client: TestClient, submit: Submit) -> None:
    first, second = submit(), submit()

    assert first["id"] != second["id"]
    assert first["name"] == "tiny"
    assert second["name"] == "tiny-2"


def _with_lr_low(value: float) -> dict[str, Any]:
    data = tiny_spec_data()
    data["params"]["lr"]["low"] = value
    return data


def _with_optimizer_choices(choices: list[str]) -> dict[str, Any]:
    data = tiny_spec_data()
    data["params"]["optimizer"]["choices"] = choices
    del data["params"]["momentum"]
    return data


@pytest.mark.parametrize(
    ("body", "loc", "fragments"),
    [
        pytest.param(
            tiny_spec_data(bogus=1),
            ["body", "bogus"],
            ["unknown field 'bogus'", "valid fields:", "params"],
            id="unknown-key",
        ),
        pytest.param(
            tiny_spec_data(budget={"n_trials": 3, "retries": 2}),
            ["body", "budget", "retries"],
            ["unknown field 'retries'", "n_trials", "max_failed"],
            id="unknown-nested-key",
        ),
        pytest.param(
            _with_lr_low(1.0),
            ["body", "params", "lr", "low"],
            ["low", "high"],
            id="low-above-high",
        ),
        pytest.param(
            _with_optimizer_choices(["adam", "nope"]),
            ["body", "params", "optimizer", "choices", 1],
            ["unknown optimizer 'nope'", "valid choices:", "adam", "sgd"],
            id="unknown-optimizer",
        ),
        pytest.param(
            tiny_spec_data(sampler={"name": "nope"}),
            ["body", "sampler", "name"],
            ["unknown sampler 'nope'", "valid choices:", "random", "tpe"],
            id="unknown-sampler",
        ),
    ],
)
def test_post_invalid_spec_names_field_and_choices(
    client: TestClient, body: dict[str, Any], loc: list[Any], fragments: list[str]
) -> None:
    response = client.post("/studies", json=body)

    error = _only_error(response)
    assert error["loc"] == loc
    for fragment in fragments:
        assert fragment in error["msg"]
    assert client.get("/studies").json()["count"] == 0


def test_post_reports_every_problem(client: TestClient) -> None:
    body = _with_lr_low(1.0)
    body["sampler"] = {"name": "nope"}

    response = client.post("/studies", json=body)

    assert response.status_code == 422
    locs = [error["loc"] for error in response.json()["detail"]]
    assert sorted(locs) == [["body", "params", "lr", "low"], ["body", "sampler", "name"]]


@pytest.mark.parametrize(
    ("content", "content_type", "fragment"),
    [
        pytest.param("{bad", "application/json", "invalid JSON at line 1", id="invalid-json"),
        pytest.param("a: [b", "application/yaml", "invalid YAML/JSON at line 1", id="bad-yaml"),
        pytest.param("", "application/yaml", "request body is empty", id="empty"),
        pytest.param("  \n", "application/json", "request body is empty", id="blank"),
        pytest.param("- 1\n- 2\n", "application/yaml", "must be a mapping", id="yaml-list"),
        pytest.param("[1, 2]", "application/json", "must be a mapping", id="json-list"),
        pytest.param('"text"', "application/json", "must be a mapping", id="json-string"),
        pytest.param(b"\xff\xfe", "application/yaml", "not UTF-8", id="not-utf8"),
    ],
)
def test_post_unparsable_body_is_422_with_message(
    client: TestClient, content: str | bytes, content_type: str, fragment: str
) -> None:
    response = client.post("/studies", content=content, headers={"content-type": content_type})

    error = _only_error(response)
    assert error["loc"] == ["body"]
    assert fragment in error["msg"]


def test_post_of_a_form_upload_says_to_send_the_spec_as_the_body(client: TestClient) -> None:
    """Found by a tester: ``curl -F spec=@spec.yaml`` was answered with a YAML syntax error
    at line 2 (of the form's parts)."""
    spec = json.dumps(tiny_spec_data()).encode()
    response = client.post("/studies", files={"spec": ("spec.yaml", spec, "application/yaml")})
    error = _only_error(response)
    assert error["loc"] == ["body"]
    assert error["msg"].startswith("a form upload is not a study spec: send the spec itself")
    assert client.get("/studies").json()["count"] == 0

    # What curl -d / --data-binary send without -H: the spec itself, read as one.
    form_type = {"content-type": "application/x-www-form-urlencoded"}
    assert client.post("/studies", content=spec, headers=form_type).status_code == 201
    # A tester: curl -d @spec.yaml drops the file's newlines, and the YAML error said no more.
    one_line = b"name: x budget: {n_trials: 2}"
    error = _only_error(client.post("/studies", content=one_line, headers=form_type))
    assert error["msg"].endswith(
        "(the body is one line: curl -d drops a file's newlines; send it with --data-binary)"
    )
    two_lines = b"name: x\nbudget: 3"  # several lines: an error of the spec's own
    error = _only_error(client.post("/studies", content=two_lines, headers=form_type))
    assert "curl -d" not in error["msg"]


def test_a_body_of_another_type_or_compressed_is_415_and_json_or_yaml_types_are_read(
    client: TestClient,
) -> None:
    """Found by a tester: XML was parsed as YAML ("a spec must be a mapping of fields, got
    str") and a gzip body was "not UTF-8 text"."""
    spec = json.dumps(tiny_spec_data())
    for content_type in ("application/xml", "text/html", "image/png"):
        response = client.post("/studies", content="<a/>", headers={"content-type": content_type})
        assert (response.status_code, response.json()) == (
            415,
            {
                "detail": f"Content-Type {content_type!r} is not a study spec's: send the spec "
                "as application/json or application/yaml"
            },
        )
    gzipped = {"content-type": "application/json", "content-encoding": "gzip"}
    response = client.post("/studies", content=gzip.compress(spec.encode()), headers=gzipped)
    assert (response.status_code, response.json()) == (
        415,
        {"detail": "Content-Encoding 'gzip' is not supported: send the spec uncompressed"},
    )
    assert client.get("/studies").json()["count"] == 0

    for content_type in (
        "application/vnd.automl+json",
        "text/json",
        "text/yaml",
        "text/plain",
        None,
    ):
        headers = {} if content_type is None else {"content-type": content_type}
        response = client.post("/studies", content=spec, headers=headers)
        assert response.status_code == 201, (content_type, response.text)
    invalid_json = client.post(
        "/studies", content="name: x", headers={"content-type": "application/problem+json"}
    )
    assert "invalid JSON" in _only_error(invalid_json)["msg"]  # read as JSON, strictly


@pytest.fixture
def small_body_client(tmp_path: Path) -> Iterator[TestClient]:
    """An app that accepts bodies of at most 200 bytes."""
    test_client = make_client(
        f"sqlite:///{tmp_path / 'small.db'}", tmp_path / "artifacts", max_body_bytes=200
    )
    yield test_client
    close_client(test_client)


def test_post_body_over_limit_is_413(small_body_client: TestClient) -> None:
    body = json.dumps(tiny_spec_data())
    assert len(body) > 200

    response = small_body_client.post(
        "/studies", content=body, headers={"content-type": "application/json"}
    )

    assert response.status_code == 413
    assert response.json()["detail"] == "body exceeds 200 bytes (AUTOML_MAX_BODY_BYTES)"
    assert small_body_client.get("/studies").json()["count"] == 0


def test_post_streamed_body_over_limit_is_413(small_body_client: TestClient) -> None:
    body = json.dumps(tiny_spec_data()).encode()
    chunks = [body[i : i + 64] for i in range(0, len(body), 64)]

    response = small_body_client.post(
        "/studies", content=iter(chunks), headers={"content-type": "application/json"}
    )

    assert response.status_code == 413
    assert "200 bytes" in response.json()["detail"]


def test_post_body_under_limit_is_accepted(small_body_client: TestClient) -> None:
    body = yaml.safe_dump(
        {
            "name": "s",
            "dataset": {"source": "digits"},
            "budget": {"n_trials": 1},
            "fixed": {"epochs": 1},
        }
    )
    assert len(body.encode()) <= 200

    response = small_body_client.post(
        "/studies", content=body, headers={"content-type": "application/yaml"}
    )

    assert response.status_code == 201, response.text


# --- list and read ---------------------------------------------------------------------------


def test_list_studies_pages_newest_first(client: TestClient, submit: Submit) -> None:
    ids = [submit(name=f"s{i}")["id"] for i in range(3)]

    first = client.get("/studies", params={"limit": 2}).json()
    rest = client.get("/studies", params={"limit": 2, "offset": 2}).json()
    beyond = client.get("/studies", params={"offset": 10}).json()

    assert first["count"] == rest["count"] == beyond["count"] == 3
    assert [s["id"] for s in first["data"]] == ids[::-1][:2]
    assert [s["id"] for s in rest["data"]] == ids[:1]
    assert beyond["data"] == []
    assert "spec" not in first["data"][0]
    assert first["data"][0]["counts"]["waiting"] == 3


def test_list_studies_empty(client: TestClient) -> None:
    response = client.get("/studies")

    assert response.status_code == 200
    assert response.json() == {"data": [], "count": 0}


def test_list_studies_filters_by_status(client: TestClient, submit: Submit) -> None:
    kept, cancelled = submit()["id"], submit()["id"]
    assert client.post(f"/studies/{cancelled}/cancel").status_code == 200

    queued = client.get("/studies", params={"status": "queued"}).json()
    gone = client.get("/studies", params={"status": "cancelled"}).json()
    done = client.get("/studies", params={"status": "completed"}).json()

    assert (queued["count"], [s["id"] for s in queued["data"]]) == (1, [kept])
    assert (gone["count"], [s["id"] for s in gone["data"]]) == (1, [cancelled])
    assert gone["data"][0]["status"] == "cancelled"
    assert done == {"data": [], "count": 0}


@pytest.mark.parametrize(
    ("params", "loc"),
    [
        ({"limit": 0}, ["query", "limit"]),
        ({"limit": 1001}, ["query", "limit"]),
        ({"offset": -1}, ["query", "offset"]),
        ({"status": "sleeping"}, ["query", "status"]),
    ],
)
def test_list_studies_bad_query_is_422(
    client: TestClient, params: dict[str, Any], loc: list[str]
) -> None:
    response = client.get("/studies", params=params)

    assert response.status_code == 422
    assert [error["loc"] for error in response.json()["detail"]] == [loc]


def test_get_study(client: TestClient, submit: Submit) -> None:
    created = submit()

    response = client.get(f"/studies/{created['id']}")

    assert response.status_code == 200
    study = response.json()
    assert study["id"] == created["id"]
    assert study["status"] == "queued"
    assert study["counts"] == {
        "waiting": 3,
        "running": 0,
        "complete": 0,
        "pruned": 0,
        "fail": 0,
        "cancelled": 0,
        "finished": 0,
    }
    assert study["best_value"] is None
    assert study["spec"] == created["spec"]
    assert study["spec"]["sampler"]["name"] == "random"


def test_get_unknown_study_is_404(client: TestClient) -> None:
    response = client.get("/studies/99")

    assert response.status_code == 404
    assert response.json() == {"detail": "study 99 not found"}


@pytest.mark.parametrize(
    "path",
    ["/studies/abc", "/studies/1.5/trials", "/studies/x/best", "/studies/1/trials/y"],
)
def test_non_integer_ids_are_422(client: TestClient, path: str) -> None:
    response = client.get(path)

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][0] == "path"


@pytest.mark.parametrize(
    "path",
    [
        "/studies/7/trials",
        "/studies/7/trials/0",
        "/studies/7/trials/0/weights",
        "/studies/7/best",
    ],
)
def test_sub_resources_of_unknown_study_are_404(client: TestClient, path: str) -> None:
    response = client.get(path)

    assert response.status_code == 404
    assert response.json() == {"detail": "study 7 not found"}


# --- trials ----------------------------------------------------------------------------------


def test_trials_exist_once_workers_start_them(
    client: TestClient, submit: Submit, run_study: RunStudy
) -> None:
    study_id = submit(budget={"n_trials": 3, "max_failed": 0})["id"]
    assert client.get(f"/studies/{study_id}/trials").json() == {"data": [], "count": 0}

    run_study(study_id)

    first = client.get(f"/studies/{study_id}/trials", params={"limit": 2}).json()
    rest = client.get(f"/studies/{study_id}/trials", params={"limit": 2, "offset": 2}).json()
    complete = client.get(f"/studies/{study_id}/trials", params={"state": "complete"}).json()
    running = client.get(f"/studies/{study_id}/trials", params={"state": "running"}).json()
    assert [t["number"] for t in first["data"]] == [0, 1]
    assert [t["number"] for t in rest["data"]] == [2]
    assert first["count"] == rest["count"] == complete["count"] == 3
    assert running == {"data": [], "count": 0}
    assert {t["attempt"] for t in first["data"]} == {1}
    assert len({t["ticket"] for t in complete["data"]}) == 3


def test_list_trials_bad_state_is_422(client: TestClient, submit: Submit) -> None:
    study_id = submit()["id"]

    for state in ("done", "waiting"):  # a trial exists only once a worker starts it
        response = client.get(f"/studies/{study_id}/trials", params={"state": state})
        assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "state"]


def test_unknown_trial_is_404(client: TestClient, submit: Submit) -> None:
    study_id = submit()["id"]

    response = client.get(f"/studies/{study_id}/trials/7")

    assert response.status_code == 404
    assert response.json() == {"detail": f"study {study_id} has no trial 7"}


def test_best_before_any_completed_trial_is_404(client: TestClient, submit: Submit) -> None:
    study_id = submit()["id"]

    response = client.get(f"/studies/{study_id}/best")

    assert response.status_code == 404
    assert response.json() == {"detail": f"study {study_id} has no completed trial yet"}


def test_weights_of_failed_trial_is_409_as_its_model(
    client: TestClient, submit: Submit, run_study: RunStudy, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(automl.worker.runner, "train", broken)
    study_id = submit(budget={"n_trials": 1, "max_failed": 0})["id"]
    run_study(study_id)

    detail = f"trial 0 of study {study_id} did not complete (fail): only a completed trial has"
    response = client.get(f"/studies/{study_id}/trials/0/weights")
    assert (response.status_code, response.json()) == (409, {"detail": f"{detail} weights"})
    response = client.get(f"/studies/{study_id}/trials/0/model")
    assert (response.status_code, response.json()) == (409, {"detail": f"{detail} a model"})
    trial = client.get(f"/studies/{study_id}/trials/0").json()
    assert (trial["state"], trial["failure"]) == ("fail", "error")
    assert trial["error"].startswith("RuntimeError: boom")


def _trained_weights_file(
    client: TestClient, submit: Submit, run_study: RunStudy
) -> tuple[int, Path]:
    """A study of one trial run to its end, and the file of its trial's weights."""
    study_id = submit(budget={"n_trials": 1, "max_failed": 0})["id"]
    run_study(study_id)
    store = client.app.state.store  # type: ignore[attr-defined]
    artifact_id = get_frozen_trial(store, study_id, 0).user_attrs[attrs.WEIGHTS]
    return study_id, store.artifacts.directory / artifact_id


def test_weights_that_cannot_be_read_are_a_503_that_says_why(
    client: TestClient, submit: Submit, run_study: RunStudy
) -> None:
    """Found by a tester: a weights file the API may not read (its permissions, a folder
    by its name) made the weights, model, predict and report routes a bare 500."""
    study_id, path = _trained_weights_file(client, submit, run_study)
    artifact_id = path.name
    kept = path.read_bytes()
    path.unlink()
    path.mkdir()  # unreadable as a file, for root too

    expected = (
        "the weights of trial 0 cannot be read from the artifact store "
        f"({artifact_id}): Is a directory"
    )
    for route in ("trials/0/weights", "best/model"):
        response = client.get(f"/studies/{study_id}/{route}")
        assert (response.status_code, response.json()) == (503, {"detail": expected}), route
        assert "Retry-After" not in response.headers  # retrying does not fix it

    path.rmdir()
    path.write_bytes(kept)
    assert client.get(f"/studies/{study_id}/trials/0/weights").status_code == 200


def test_weights_whose_bytes_changed_are_a_503_that_says_so(
    client: TestClient, submit: Submit, run_study: RunStudy
) -> None:
    """Weights changed on disk to other finite values (a disk, a network file system)
    were served as if sound: the SHA-256 recorded at the write now refuses them, before
    any byte of a download is sent."""
    study_id, path = _trained_weights_file(client, submit, run_study)
    kept = path.read_bytes()
    damaged = bytearray(kept)
    damaged[-5] ^= 0x01  # a tensor's byte: still a readable safetensors file
    path.write_bytes(bytes(damaged))

    for route in ("trials/0/weights", "best/model"):
        response = client.get(f"/studies/{study_id}/{route}")
        assert response.status_code == 503, route
        assert response.json()["detail"].startswith(
            "the weights of trial 0 are damaged: their bytes are not those saved"
        ), route

    # The hint's two steps queue the trial's configuration again.
    detail = client.get(f"/studies/{study_id}/trials/0/weights").json()["detail"]
    command = detail.split("queue it: ")[1].split(" (a study that ended")[0]
    assert detail.endswith("(a study that ended takes it after automl resume ID --add-trials 1)")
    params = json.loads(shlex.split(command)[-1])
    assert params == client.get(f"/studies/{study_id}/trials/0").json()["params"]
    resumed = client.post(f"/studies/{study_id}/resume", json={"add_trials": 1})
    assert resumed.status_code == 200, resumed.text
    queued = client.post(f"/studies/{study_id}/trials", json={"configs": [params]})
    assert queued.status_code == 201, queued.text

    path.write_bytes(kept)
    response = client.get(f"/studies/{study_id}/trials/0/weights")
    assert (response.status_code, response.content) == (200, kept)


def test_weights_of_unknown_trial_is_404(client: TestClient, submit: Submit) -> None:
    study_id = submit()["id"]

    response = client.get(f"/studies/{study_id}/trials/9/weights")

    assert response.status_code == 404
    assert response.json() == {"detail": f"study {study_id} has no trial 9"}


# --- after a run -----------------------------------------------------------------------------


def test_completed_study_status_and_counts(completed: tuple[TestClient, int]) -> None:
    client, study_id = completed

    study = client.get(f"/studies/{study_id}").json()

    n_trials = COMPLETED_SPEC["budget"]["n_trials"]
    assert study["status"] == "completed"
    assert study["status_reason"] == "all trials finished"
    assert study["counts"]["finished"] == n_trials
    assert study["counts"]["complete"] + study["counts"]["pruned"] == n_trials
    assert study["counts"]["waiting"] == study["counts"]["running"] == 0
    assert 0.0 < study["best_value"] <= 1.0
    assert study["started_at"] is not None
    assert study["finished_at"] is not None


def test_completed_trials_have_per_epoch_values(completed: tuple[TestClient, int]) -> None:
    client, study_id = completed
    epochs = COMPLETED_SPEC["fixed"]["epochs"]

    page = client.get(f"/studies/{study_id}/trials", params={"state": "complete"}).json()

    assert page["count"] == len(page["data"]) >= 1
    for trial in page["data"]:
        assert trial["state"] == "complete"
        assert set(trial["params"]) >= {"optimizer", "lr"}
        assert len(trial["intermediate_values"]) == epochs
        assert all(0.0 <= value <= 1.0 for value in trial["intermediate_values"].values())
        assert trial["values"] == [pytest.approx(trial["metrics"]["accuracy"])]
        assert trial["duration_s"] > 0


def test_trials_listed_without_per_epoch_values(completed: tuple[TestClient, int]) -> None:
    """The same page, less the per-epoch values (most of a page of long trials); a pruned
    trial's value (its last epoch's) stays."""
    client, study_id = completed
    whole = client.get(f"/studies/{study_id}/trials").json()

    lean = client.get(f"/studies/{study_id}/trials", params={"intermediate_values": False})

    assert lean.status_code == 200
    page = lean.json()
    assert page["count"] == whole["count"]
    assert all(trial["intermediate_values"] is None for trial in page["data"])
    for trial in whole["data"]:
        trial["intermediate_values"] = None
    assert page["data"] == whole["data"]


def test_completed_trial_detail(completed: tuple[TestClient, int]) -> None:
    client, study_id = completed

    trial = client.get(f"/studies/{study_id}/trials/0").json()

    assert trial["number"] == 0
    assert trial["config"]["epochs"] == COMPLETED_SPEC["fixed"]["epochs"]
    assert trial["config"]["model"]["options"]["width"] == COMPLETED_SPEC["fixed"]["width"]
    assert len(trial["history"]) == COMPLETED_SPEC["fixed"]["epochs"]
    assert len(trial["per_class"]) == 10
    confusion = trial["confusion"]
    assert len(confusion) == 10
    assert all(len(row) == 10 for row in confusion)
    assert sum(map(sum, confusion)) > 0
    assert trial["classes"] == [str(digit) for digit in range(10)]  # the matrix's labels
    assert trial["weights_available"] is (trial["state"] == "complete")
    if trial["state"] == "complete":  # restore_best: its best epoch's accuracy is its value
        kept = trial["history"][trial["best_epoch"] - 1]
        assert kept["accuracy"] == max(entry["accuracy"] for entry in trial["history"])


def test_trial_times_carry_their_utc_offset(completed: tuple[TestClient, int]) -> None:
    """RFC 3339 date-times, as the schema declares: naive local times once failed the
    schema (found by the fuzz test) and left clients guessing the zone."""
    client, study_id = completed
    listed = client.get(f"/studies/{study_id}/trials").json()["data"]
    shown = client.get(f"/studies/{study_id}/trials/0").json()

    for trial in [*listed, shown]:
        for field in ("datetime_start", "datetime_complete"):
            moment = datetime.fromisoformat(trial[field])
            assert moment.utcoffset() is not None, trial[field]
    assert datetime.fromisoformat(shown["datetime_start"]) <= datetime.now(UTC)


def test_best_after_completion(completed: tuple[TestClient, int]) -> None:
    client, study_id = completed
    study = client.get(f"/studies/{study_id}").json()

    response = client.get(f"/studies/{study_id}/best")

    assert response.status_code == 200
    best = response.json()
    assert best["study_id"] == study_id
    assert best["directions"] == ["maximize"]
    assert best["metrics"] == ["accuracy"]
    [trial] = best["trials"]
    assert trial["state"] == "complete"
    assert set(trial["params"]) >= {"optimizer", "lr"}
    assert trial["metrics"]["accuracy"] == pytest.approx(study["best_value"])
    assert trial["values"] == [pytest.approx(study["best_value"])]
    listed = client.get(f"/studies/{study_id}/trials").json()["data"]
    finished = [t["values"][0] for t in listed if t["state"] == "complete"]
    assert study["best_value"] == pytest.approx(max(finished))


def test_weights_load_as_state_dict(completed: tuple[TestClient, int]) -> None:
    client, study_id = completed
    number = client.get(f"/studies/{study_id}/best").json()["trials"][0]["number"]

    response = client.get(f"/studies/{study_id}/trials/{number}/weights")

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    assert f"study{study_id}-trial{number}.safetensors" in response.headers["content-disposition"]
    assert int(response.headers["content-length"]) == len(response.content)
    state_dict = safetensors.torch.load(response.content)
    assert isinstance(state_dict, dict)
    assert state_dict
    assert all(isinstance(tensor, torch.Tensor) for tensor in state_dict.values())


def test_cancel_completed_study_is_409(completed: tuple[TestClient, int]) -> None:
    client, study_id = completed

    response = client.post(f"/studies/{study_id}/cancel")

    assert response.status_code == 409
    assert response.json() == {"detail": f"study {study_id} is already completed"}


def test_run_in_process_with_fixture(
    client: TestClient, submit: Submit, run_study: RunStudy
) -> None:
    study_id = submit(budget={"n_trials": 2, "max_failed": 0})["id"]

    run_study(study_id)

    study = client.get(f"/studies/{study_id}").json()
    assert study["status"] == "completed"
    assert study["counts"]["finished"] == 2
    assert client.get("/studies", params={"status": "completed"}).json()["count"] == 1


# --- cancel ----------------------------------------------------------------------------------


def test_cancel_queued_study(client: TestClient, submit: Submit, run_study: RunStudy) -> None:
    study_id = submit()["id"]

    response = client.post(f"/studies/{study_id}/cancel")

    assert response.status_code == 200
    study = response.json()
    assert study["status"] == "cancelled"
    assert study["status_reason"] == "cancelled by request"
    assert study["finished_at"] is not None
    assert client.get(f"/studies/{study_id}").json()["status"] == "cancelled"

    run_study(study_id)  # a worker must not pick up trials of a cancelled study
    assert client.get(f"/studies/{study_id}").json()["counts"]["finished"] == 0


def test_cancel_twice_is_409(client: TestClient, submit: Submit) -> None:
    study_id = submit()["id"]
    assert client.post(f"/studies/{study_id}/cancel").status_code == 200

    response = client.post(f"/studies/{study_id}/cancel")

    assert response.status_code == 409
    assert response.json() == {"detail": f"study {study_id} is already cancelled"}


def test_cancel_unknown_study_is_404(client: TestClient) -> None:
    response = client.post("/studies/42/cancel")

    assert response.status_code == 404
    assert response.json() == {"detail": "study 42 not found"}


# --- service ---------------------------------------------------------------------------------


def test_health(client: TestClient) -> None:
    response = client.get("/health")

    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert response.json()["storage"] == "ok"


def test_openapi_documents_studies_and_spec(client: TestClient) -> None:
    response = client.get("/openapi.json")

    assert response.status_code == 200
    schema = response.json()
    paths = schema["paths"]
    for path in (
        "/studies",
        "/studies/{study_id}",
        "/studies/{study_id}/cancel",
        "/studies/{study_id}/trials",
        "/studies/{study_id}/trials/{number}",
        "/studies/{study_id}/trials/{number}/weights",
        "/studies/{study_id}/best",
        "/health",
    ):
        assert path in paths, path
    components = schema["components"]["schemas"]
    assert "StudySpec" in components
    assert "params" in components["StudySpec"]["properties"]
    body = paths["/studies"]["post"]["requestBody"]["content"]
    assert body["application/yaml"]["schema"] == {"$ref": "#/components/schemas/StudySpec"}
    assert body["application/json"]["schema"] == {"$ref": "#/components/schemas/StudySpec"}
    dangling = {ref.split("/")[-1] for ref in _refs(schema)} - set(components)
    assert not dangling


def test_openapi_names_operations_and_declares_every_422_field(client: TestClient) -> None:
    """Found by a tester: operationIds were FastAPI's path-derived defaults (a generated
    client got ``delete_studies__study_id__delete``), and 422 items lacked ``path``,
    which every one carries (a generated model dropped it)."""
    schema = client.get("/openapi.json").json()
    operations = {
        (method.upper(), path): operation["operationId"]
        for path, methods in schema["paths"].items()
        for method, operation in methods.items()
    }
    names = list(operations.values())
    assert len(set(names)) == len(names)
    assert all(re.fullmatch(r"[a-z]+(_[a-z]+)*", name) for name in names), names
    assert operations[("DELETE", "/studies/{study_id}")] == "delete_study"
    assert operations[("POST", "/studies/{study_id}/rerun-failed")] == "rerun_failed"

    item = schema["components"]["schemas"]["ValidationError"]
    assert {"loc", "msg", "type", "path"} <= set(item["required"])
    refused = client.post("/studies", json={"name": "x", "params": {"lr": {"type": "nope"}}})
    assert refused.status_code == 422
    for error in refused.json()["detail"]:
        assert set(item["required"]) <= set(error)


def test_unknown_query_parameters_are_refused(client: TestClient) -> None:
    """Found by a tester: ``GET /studies?state=running`` (the trial lists' name) answered
    every study, unfiltered; ``/health`` takes whatever a probe sends."""
    response = client.get("/studies", params={"state": "running"})

    assert response.status_code == 422
    assert response.json()["detail"] == [
        {
            "loc": ["query", "state"],
            "msg": "unknown query parameter 'state'; this route takes limit, offset, status",
            "type": "extra_forbidden",
            "path": "state",
        }
    ]
    assert client.get("/studies", params={"status": "running"}).status_code == 200
    dry_run = client.post("/studies", params={"dry_run": "1"}, json={"name": "q"})
    assert dry_run.status_code == 422
    assert dry_run.json()["detail"][0]["loc"] == ["query", "dry_run"]
    assert client.get("/studies").json()["count"] == 0  # not submitted
    assert client.get("/health", params={"_": "1701"}).status_code == 200


def test_a_query_parameter_given_twice_is_refused(client: TestClient, submit: Submit) -> None:
    """Found by a tester: FastAPI kept the last value, so a front-end's two-status filter
    (``?status=completed&status=cancelled``) listed only the cancelled studies."""
    submit()
    response = client.get("/studies?status=completed&status=cancelled")

    assert response.status_code == 422
    assert response.json()["detail"] == [
        {
            "loc": ["query", "status"],
            "msg": "query parameter 'status' is given 2 times; give it once",
            "type": "value_error",
            "path": "status",
        }
    ]
    assert client.get("/studies?limit=1&limit=2").status_code == 422
    assert client.get("/studies?limit=1&offset=0").status_code == 200


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def test_docs_page(client: TestClient) -> None:
    response = client.get("/docs")

    assert response.status_code == 200
    assert "swagger" in response.text.lower()


# --- PostgreSQL ------------------------------------------------------------------------------


def test_post_and_get_on_postgres(postgres_url: str, tmp_path: Path) -> None:
    pg_client = make_client(postgres_url, tmp_path / "artifacts")
    try:
        created = pg_client.post(
            "/studies",
            content=yaml.safe_dump(tiny_spec_data(name="pg")),
            headers={"content-type": "application/yaml"},
        )
        assert created.status_code == 201, created.text
        study_id = created.json()["id"]

        study = pg_client.get(f"/studies/{study_id}").json()
        listed = pg_client.get("/studies").json()
        trials = pg_client.get(f"/studies/{study_id}/trials").json()

        assert study["name"] == "pg"
        assert study["status"] == "queued"
        assert study["counts"]["waiting"] == 3
        assert listed["count"] == 1
        assert listed["data"][0]["id"] == study_id
        assert trials["count"] == 0
        assert pg_client.get("/health").json()["status"] == "ok"
    finally:
        close_client(pg_client)
