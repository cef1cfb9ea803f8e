"""The store's package face: every public name resolves, and its light modules stay light."""

from __future__ import annotations

import importlib
import subprocess
import sys

import automl.store


def test_every_public_name_resolves() -> None:
    for name in automl.store.__all__:
        assert getattr(automl.store, name) is not None, name
    assert set(automl.store.__all__) <= set(dir(automl.store))


def test_every_lazy_name_is_public_in_its_module() -> None:
    for module, names in automl.store._SOURCES.items():
        public = getattr(importlib.import_module(f"automl.store.{module}"), "__all__", None)
        if public is not None:  # a module without ``__all__``: the test above covers it
            assert set(names) <= set(public), (module, sorted(set(names) - set(public)))


def test_views_and_attrs_import_without_optuna_sqlalchemy_or_torch() -> None:
    probe = (
        "import sys\n"
        "from automl.store import BestTrials, EvaluationState, Page, StudyStatus, attrs\n"
        "from automl.store.views import StudyDetail, TrialSummary\n"
        "print(sorted(m for m in ('optuna', 'sqlalchemy', 'torch') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )

    assert done.stdout.strip() == "[]"
