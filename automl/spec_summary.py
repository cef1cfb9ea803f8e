"""What listings show of a stored spec (its metrics), read from its JSON without the spec's
models: those import every registry (torch), which a command that only lists studies
(``automl status``) should not wait for."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

DEFAULT_METRIC = "accuracy"
"""The metric of a spec that names no objective."""


def objective_metrics(spec: Mapping[str, Any]) -> tuple[str, ...]:
    """One metric name per objective of a stored spec (``StudySpec.metrics``)."""
    objectives = spec.get("objectives") or [spec.get("objective") or {}]
    return tuple(objective.get("metric", DEFAULT_METRIC) for objective in objectives)
