"""``automl dashboard`` as a real process: optuna-dashboard shows automl's studies, trials,
attributes and artifacts, over its HTTP API and in a real browser (headless chromium)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from automl.store import attrs, get_study, open_store
from tests.chromium import render_page, require_chromium
from tests.conftest import free_port, wait_healthy
from tests.delivery.trained import train_study
from tests.forked import ForkedProcess

pytestmark = pytest.mark.slow

FAST = {"epochs": 1, "width": 8, "depth": 1, "batch_size": 128, "lr": 0.01, "optimizer": "adam"}


@dataclass(frozen=True)
class Dashboard:
    """A running ``automl dashboard`` and the study it shows."""

    url: str
    study_id: int
    study_name: str
    value: float


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    """A one-trial study trained to completion, then ``automl dashboard`` on its store."""
    folder = tmp_path_factory.mktemp("dashboard")
    url = f"sqlite:///{folder / 'automl.db'}"
    artifacts = folder / "artifacts"
    store = open_store(url, artifacts_dir=artifacts)
    try:
        study_id = train_study(store, name="dashboard-e2e", fixed=FAST)
        study = get_study(store, study_id)
        assert study.best_value is not None
        value = study.best_value
        name = study.name
    finally:
        store.close()
    port = free_port()
    log = folder / "dashboard.log"
    command = ["dashboard", "--port", str(port), "--storage", url]
    command += ["--artifacts-dir", str(artifacts)]
    process = ForkedProcess(command, {**os.environ, "AUTOML_ARTIFACT_STORE": "folder"}, log)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, process, log.read_text, 60, path="/api/meta")
        yield Dashboard(base, study_id, name, value)
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0, log.read_text()


def _study_detail(dashboard: Dashboard) -> dict[str, Any]:
    response = httpx.get(f"{dashboard.url}/api/studies/{dashboard.study_id}", timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def test_the_dashboard_api_shows_the_study_trials_attributes_and_artifacts(
    dashboard: Dashboard,
) -> None:
    listed = httpx.get(f"{dashboard.url}/api/studies", timeout=30).json()["study_summaries"]
    assert [(s["study_id"], s["study_name"]) for s in listed] == [
        (dashboard.study_id, dashboard.study_name)
    ]
    detail = _study_detail(dashboard)
    assert detail["name"] == dashboard.study_name
    (trial,) = detail["trials"]
    assert trial["state"] == "Complete"
    assert trial["values"] == [pytest.approx(dashboard.value)]
    user_attrs = {attr["key"]: attr["value"] for attr in trial["user_attrs"]}
    assert {attrs.CONFIG, attrs.METRICS, attrs.CLASSES, attrs.WEIGHTS} <= set(user_attrs)

    artifacts = {artifact["filename"]: artifact for artifact in trial["artifacts"]}
    assert set(artifacts) == {"weights.safetensors", "model_card.json"}
    base = f"{dashboard.url}/artifacts/{dashboard.study_id}/{trial['trial_id']}"
    card_response = httpx.get(f"{base}/{artifacts['model_card.json']['artifact_id']}", timeout=30)
    assert card_response.status_code == 200
    assert card_response.headers["content-type"] == "application/json"
    card = card_response.json()
    assert card["model"]["study_name"] == dashboard.study_name
    assert card["objectives"][0]["value"] == pytest.approx(dashboard.value)
    assert len(card["classes"]) == 10
    weights = httpx.get(f"{base}/{artifacts['weights.safetensors']['artifact_id']}", timeout=30)
    assert weights.status_code == 200
    header_length = int.from_bytes(weights.content[:8], "little")
    assert json.loads(weights.content[8 : 8 + header_length])["__metadata__"] == {"format": "pt"}


def test_the_dashboard_renders_the_study_and_a_trial_value_in_a_browser(
    dashboard: Dashboard, tmp_path: Path
) -> None:
    require_chromium()
    study_page = f"{dashboard.url}/dashboard/studies/{dashboard.study_id}"
    dom, screenshot = render_page(study_page, tmp_path / "study", wait_ms=8000)
    assert f"{dashboard.study_name} (id={dashboard.study_id})" in dom
    assert "Best Trial (number=0)" in dom
    assert repr(dashboard.value) in dom, "the best trial's value is not on the page"
    assert screenshot.stat().st_size > 10_000

    trials_page = f"{study_page}/trials"
    dom, screenshot = render_page(trials_page, tmp_path / "trials", wait_ms=8000)
    assert repr(dashboard.value) in dom
    assert 'download="model_card.json"' in dom, "the model card is not offered for download"
    assert 'download="weights.safetensors"' in dom
    assert screenshot.is_file()
