"""Tests of the pruner registry: every pruner builds as its documented options say."""

from __future__ import annotations

import optuna
import pytest

from automl.pruners import PRUNERS, build_pruner
from automl.spec import load_spec


def test_percentile_without_options_prunes_at_its_documented_25th_percentile() -> None:
    # Optuna requires percentile; the spec's default never reached it.
    spec = load_spec({"name": "x", "pruner": {"name": "percentile"}})
    pruner = build_pruner(spec.pruner_or_default.name, spec.pruner_or_default.options)
    assert isinstance(pruner, optuna.pruners.PercentilePruner)
    assert pruner._percentile == 25.0
    assert build_pruner("percentile", {"percentile": 40.0})._percentile == 40.0


@pytest.mark.parametrize("name", [name for name in PRUNERS.names() if name != "threshold"])
def test_every_pruner_builds_with_its_documented_defaults(name: str) -> None:
    spec = load_spec({"name": "x", "pruner": {"name": name}})
    assert isinstance(build_pruner(name, spec.pruner_or_default.options), optuna.pruners.BasePruner)


def test_threshold_needs_a_bound_named_at_its_options() -> None:
    from automl.spec import SpecError

    with pytest.raises(SpecError) as info:
        load_spec({"name": "x", "pruner": {"name": "threshold"}})
    assert [error.path for error in info.value.errors] == ["pruner.options"]
    assert load_spec({"name": "x", "pruner": {"name": "threshold", "options": {"lower": 0.1}}})
