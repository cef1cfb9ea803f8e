"""A stored spec's metrics read from its JSON agree with the spec's models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from automl.spec import StudySpec, validate_spec
from automl.spec_summary import objective_metrics
from tests.conftest import tiny_spec_data

SEARCH_SPACES = sorted((Path(__file__).resolve().parents[1] / "search_spaces").glob("*.yaml"))


@pytest.mark.parametrize("path", SEARCH_SPACES, ids=lambda path: path.name)
def test_the_bundled_specs_metrics(path: Path) -> None:
    spec = StudySpec.model_validate(yaml.safe_load(path.read_text()))  # data not checked

    assert objective_metrics(json.loads(spec.model_dump_json())) == tuple(spec.metrics)


@pytest.mark.parametrize(
    ("objective", "metrics"),
    [
        ({}, ("accuracy",)),
        ({"objective": None}, ("accuracy",)),
        ({"objective": {"metric": "loss"}}, ("loss",)),
        ({"objective": None, "objectives": [{"metric": "loss"}, {}]}, ("loss", "accuracy")),
    ],
)
def test_a_stored_specs_metrics(objective: dict[str, object], metrics: tuple[str, ...]) -> None:
    spec = validate_spec(tiny_spec_data(**objective))

    assert objective_metrics(json.loads(spec.model_dump_json())) == metrics == tuple(spec.metrics)
