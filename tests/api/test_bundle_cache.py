"""The best model's download is built (and traced) once per model: byte-identical repeats,
a strong ETag, ``If-None-Match`` answered 304, HEAD without a rebuild, and a new bundle once
the card or the best trial changes."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import multiprocessing
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from fastapi.testclient import TestClient
from optuna.trial import TrialState

from automl.delivery.bundle import BUNDLES, BundleCache
from automl.store import Store, attrs, best_trials, get_frozen_trial, optuna_rows
from tests.api.conftest import close_client, make_client
from tests.conftest import pid_alive, store_at
from tests.delivery.trained import TRAINED_SPEC, train_study

QUICK = {**TRAINED_SPEC["fixed"], "epochs": 1}
"""One epoch of the trained digits study: a model to bundle in about a second."""

SAME_HEADERS = ("content-type", "content-length", "content-disposition", "etag", "cache-control")


@dataclass
class Served:
    """A trained study in a store, and an API client over the same database."""

    store: Store
    client: TestClient
    study_id: int

    @property
    def url(self) -> str:
        """The best model's download."""
        return f"/studies/{self.study_id}/best/model"

    def close(self) -> None:
        """Closes the client, its app's store and this store."""
        close_client(self.client)
        self.store.close()


def _served(root: Path) -> Served:
    url = f"sqlite:///{root / 'automl.db'}"
    store = store_at(url, root)
    study_id = train_study(store, fixed=QUICK)
    return Served(store, make_client(url, root / "artifacts"), study_id)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A study whose model the tests download but never change."""
    made = _served(tmp_path_factory.mktemp("served"))
    yield made
    made.close()


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Served]:
    """A study of its own, for a test that changes its best trial or card."""
    made = _served(tmp_path)
    yield made
    made.close()


@pytest.fixture(autouse=True)
def empty_cache() -> None:
    """Each test starts with no bundle kept, so its first download builds."""
    BUNDLES.clear()


@pytest.fixture
def traces(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Records every model the API traces to TorchScript (in a child process, a second or
    more each), then traces it; none may be traced in the API's own process, where each
    trace leaks its classes for good."""
    calls: list[object] = []
    trace = BUNDLES.trace

    def counted(model: torch.nn.Module, shape: Any, source: Any) -> bytes:
        calls.append(model)
        return trace(model, shape, source)

    def never_here(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("traced in the API's process")

    monkeypatch.setattr(BUNDLES, "trace", counted)
    monkeypatch.setattr(torch.jit, "trace", never_here)
    return calls


def _card(response: httpx.Response) -> dict[str, Any]:
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        return json.loads(archive.read("model_card.json"))


def test_repeated_downloads_are_byte_identical_and_built_once(
    served: Served, traces: list[object]
) -> None:
    builds = BUNDLES.builds
    responses = [served.client.get(served.url) for _ in range(20)]

    assert {response.status_code for response in responses} == {200}
    assert len({response.content for response in responses}) == 1
    first = responses[0]
    digest = hashlib.sha256(first.content).hexdigest()
    assert {response.headers["etag"] for response in responses} == {f'"{digest}"'}
    assert first.headers["cache-control"] == "private, no-cache"
    assert first.headers["content-length"] == str(len(first.content))
    assert BUNDLES.builds - builds == 1
    assert len(traces) == 1  # one traced model, not 20
    # Traced in the child (the API's own torch.jit.trace would have failed the export).
    assert _card(first)["bundle"]["exports"]["torchscript"] == {
        "file": "model.torchscript.pt",
        "error": None,
    }


def test_if_none_match_with_the_etag_answers_304_without_a_body(served: Served) -> None:
    etag = served.client.get(served.url).headers["etag"]
    builds = BUNDLES.builds

    for given in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        response = served.client.get(served.url, headers={"If-None-Match": given})
        assert response.status_code == 304, given
        assert response.content == b""
        assert response.headers["etag"] == etag
        assert "content-length" not in response.headers or response.headers["content-length"] == "0"
    stale = served.client.get(served.url, headers={"If-None-Match": '"other"'})
    assert stale.status_code == 200 and stale.headers["etag"] == etag and stale.content
    assert BUNDLES.builds == builds


def test_head_answers_the_headers_of_get_and_builds_no_more(
    served: Served, traces: list[object]
) -> None:
    builds = BUNDLES.builds
    head = served.client.head(served.url)
    get = served.client.get(served.url)
    again = served.client.head(served.url)

    assert (head.status_code, get.status_code, again.status_code) == (200, 200, 200)
    assert head.content == b"" == again.content
    for name in SAME_HEADERS:
        assert head.headers[name] == get.headers[name] == again.headers[name], name
    assert int(head.headers["content-length"]) == len(get.content)
    assert BUNDLES.builds - builds == 1 and len(traces) == 1


def test_test_metrics_recorded_later_give_a_new_bundle(fresh: Served) -> None:
    before = fresh.client.get(fresh.url)
    number = _card(before)["model"]["trial_number"]
    trial = get_frozen_trial(fresh.store, fresh.study_id, number)
    rescored = {**trial.user_attrs[attrs.TEST_METRICS], "accuracy": 0.125}
    trial_id = fresh.store.storage.get_trial_id_from_study_id_trial_number(fresh.study_id, number)
    with fresh.store.write() as connection:  # as the test-split evaluation records them
        optuna_rows.put_trial_attrs(connection, trial_id, {attrs.TEST_METRICS: rescored})
    builds = BUNDLES.builds

    after = fresh.client.get(fresh.url, headers={"If-None-Match": before.headers["etag"]})
    repeated = fresh.client.get(fresh.url)

    assert after.status_code == 200
    assert after.headers["etag"] != before.headers["etag"]
    assert _card(after)["metrics"]["test"]["accuracy"] == 0.125
    assert repeated.content == after.content
    assert BUNDLES.builds - builds == 1
    assert len(BUNDLES) == 1  # the study's stale bundle is not kept beside it


def test_a_new_best_trial_gives_a_new_bundle(fresh: Served) -> None:
    before = fresh.client.get(fresh.url)
    best = best_trials(fresh.store, fresh.study_id).trials[0]
    template = copy.deepcopy(get_frozen_trial(fresh.store, fresh.study_id, best.number))
    template.state, template.values = TrialState.COMPLETE, [1.0]  # better than any
    template.datetime_complete = template.datetime_start
    fresh.store.storage.create_new_trial(fresh.study_id, template)

    after = fresh.client.get(fresh.url)

    assert after.status_code == 200
    card = _card(after)
    assert card["model"]["trial_number"] != best.number
    assert f"trial{card['model']['trial_number']}-model.zip" in after.headers["content-disposition"]
    assert after.headers["etag"] != before.headers["etag"]


def test_a_trial_asked_for_by_number_has_a_bundle_of_its_own(fresh: Served) -> None:
    """Found by a tester: only the best model (with several objectives, the Pareto front's
    first trial) could be taken away, not the trade-off a user picked."""
    earlier = best_trials(fresh.store, fresh.study_id).trials[0].number
    template = copy.deepcopy(get_frozen_trial(fresh.store, fresh.study_id, earlier))
    template.state, template.values = TrialState.COMPLETE, [1.0]  # a new best
    template.datetime_complete = template.datetime_start
    fresh.store.storage.create_new_trial(fresh.study_id, template)
    template.state, template.values = TrialState.FAIL, None
    failed = fresh.store.storage.get_trial(
        fresh.store.storage.create_new_trial(fresh.study_id, template)
    ).number
    path = f"/studies/{fresh.study_id}/trials/{{}}/model"

    builds = BUNDLES.builds
    chosen = fresh.client.get(path.format(earlier))
    best = fresh.client.get(fresh.url)
    chosen_again = fresh.client.get(path.format(earlier))  # a tester: built again, new ETag
    best_again = fresh.client.get(fresh.url)
    missing = fresh.client.get(path.format(99))
    not_complete = fresh.client.get(path.format(failed))

    assert chosen.status_code == 200
    card = _card(chosen)
    assert (card["model"]["trial_number"], card["bundle"]["selection"]) == (earlier, "chosen")
    assert (
        f"study{fresh.study_id}-trial{earlier}-model.zip" in chosen.headers["content-disposition"]
    )
    assert _card(best)["model"]["trial_number"] != earlier
    assert best_again.content == best.content
    assert chosen_again.headers["etag"] == chosen.headers["etag"]
    assert BUNDLES.builds - builds == 2  # each kept beside the other
    assert missing.status_code == 404
    assert not_complete.status_code == 409
    assert "did not complete (fail)" in not_complete.json()["detail"]


def test_the_cache_keeps_the_least_recently_used_within_its_size(
    served: Served, fresh: Served
) -> None:
    cache = BundleCache(size=1)
    for store, study_id in [(served.store, served.study_id), (fresh.store, fresh.study_id)] * 2:
        cache.get(store, study_id)
    assert (cache.builds, len(cache)) == (4, 1)

    roomy = BundleCache(size=2)
    for store, study_id in [(served.store, served.study_id), (fresh.store, fresh.study_id)] * 2:
        roomy.get(store, study_id)
    assert (roomy.builds, len(roomy)) == (2, 2)


def test_the_apps_shutdown_ends_the_tracing_child(served: Served) -> None:
    """A server whose process outlives its app (run as a multiprocessing child) must not
    keep the tracing child until its idle timer ends it (60 s at its exit)."""
    with TestClient(served.client.app) as client:
        assert client.get(served.url).status_code == 200
        tracing = [c for c in multiprocessing.active_children() if c.name.startswith("Spawn")]
        assert tracing, "the bundle's TorchScript file is traced in a child process"

    deadline = time.monotonic() + 30  # polled: the pool's own thread reaps them
    while any(pid_alive(child.pid) for child in tracing) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [child.pid for child in tracing if pid_alive(child.pid)]
