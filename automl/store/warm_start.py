"""Warm start: the best configurations of earlier studies run first in a new one.

A spec names earlier studies, or ``auto`` (completed studies on the same dataset
fingerprint). Their ``top_k`` best trials (by each study's first objective) become
configurations of the new study, keeping only the params the new space searches, with
values it allows and conditions under which they apply; whatever is dropped is noted.
They are queued after the spec's own ``enqueue`` configurations and count toward the
budget. Only studies of the new study's own project count: another project's is "not
found" (named) or not seen (``auto``), so a warm start cannot copy another project's
configurations.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from automl.spec import FieldError, SpecError, StudySpec, value_problem
from automl.store import optuna_rows, tables
from automl.store.attrs import StudyStatus
from automl.store.storage import Store
from automl.store.tables import DELETING

AUTO_MAX_STUDIES = 5
"""With ``auto``, the most recent completed studies on the same data that are used."""


@dataclass
class WarmStart:
    """The configurations a warm start queues, and what it left out."""

    studies: list[int] = field(default_factory=list)
    configs: list[dict[str, Any]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    def note(self) -> dict[str, Any]:
        """What the study's attributes record about it."""
        return {"studies": self.studies, "enqueued": len(self.configs), "dropped": self.dropped}


def plan_warm_start(
    store: Store, spec: StudySpec, fingerprint: str | None, project: str
) -> WarmStart:
    """The configurations of ``spec``'s warm start, best first, at most the budget its
    ``enqueue`` leaves, from studies of ``project`` only.

    Raises:
        SpecError: If a named study does not exist (``warm_start.studies[i]``).
    """
    warm = spec.warm_start
    if warm is None:
        return WarmStart()
    with store.read() as connection:
        sources = _source_studies(connection, warm.studies, fingerprint, project)
        plan = WarmStart(studies=[study_id for study_id, _ in sources])
        seen = {json.dumps(config, sort_keys=True) for config in spec.enqueue}
        for study_id, directions in sources:
            maximize = directions[0] == "maximize"
            trial_ids = optuna_rows.top_trial_ids(connection, study_id, maximize, warm.top_k)
            for trial in optuna_rows.load_trials(connection, trial_ids):
                config = _fit(spec, trial.params, f"study {study_id} trial {trial.number}", plan)
                key = json.dumps(config, sort_keys=True)
                if config and key not in seen:
                    seen.add(key)
                    plan.configs.append(config)
    plan.configs = plan.configs[: max(0, spec.budget.n_trials - len(spec.enqueue))]
    return plan


def _source_studies(
    connection: sa.engine.Connection,
    named: list[int] | str,
    fingerprint: str | None,
    project: str,
) -> list[tuple[int, list[str]]]:
    studies = tables.studies
    columns = sa.select(studies.c.study_id, studies.c.spec).where(studies.c.project == project)
    if named == "auto":
        if fingerprint is None:
            return []
        rows = connection.execute(
            columns.where(
                studies.c.dataset_fingerprint == fingerprint,
                studies.c.status == StudyStatus.COMPLETED.value,
            )
            .order_by(studies.c.study_id.desc())
            .limit(AUTO_MAX_STUDIES)
        ).all()
    else:
        rows = connection.execute(
            columns.where(studies.c.study_id.in_(list(named)), studies.c.status != DELETING)
        ).all()
        found = {row.study_id for row in rows}
        missing = [
            FieldError(("warm_start", "studies", index), f"study {study_id} not found")
            for index, study_id in enumerate(named)
            if study_id not in found
        ]
        if missing:
            raise SpecError(missing)
    return [(int(row.study_id), _directions(row.spec)) for row in rows]


def _directions(spec_json: str) -> list[str]:
    return StudySpec.model_validate_json(spec_json).directions


def _fit(spec: StudySpec, params: dict[str, Any], source: str, plan: WarmStart) -> dict[str, Any]:
    """The part of ``params`` that the new space searches, allows and applies."""
    kept: dict[str, Any] = {}
    for name in spec.param_order():  # parents first, so conditions can be checked
        if name not in params:
            continue
        param = spec.params[name]
        if value_problem(param, params[name]) is not None:
            plan.dropped.append(f"{source}: {name}={params[name]!r} is outside this space")
            continue
        conditions = spec.conditions(name)
        unmet = [parent for parent, values in conditions.items() if kept.get(parent) not in values]
        if unmet:
            plan.dropped.append(
                f"{source}: {name}={params[name]!r} does not apply here (see {', '.join(unmet)})"
            )
        else:
            kept[name] = params[name]
    for name in sorted(set(params) - set(spec.params)):
        plan.dropped.append(f"{source}: {name} is not searched here")
    return kept
