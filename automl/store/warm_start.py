"""Warm start: the best configurations of earlier studies run first in a new one.

A spec names earlier studies, or ``auto`` (completed studies on the same dataset
fingerprint). Their ``top_k`` best trials (by each study's first objective) become
configurations of the new study, keeping only the params the new space searches, with
values it allows and conditions under which they apply; whatever is dropped is noted.
A configuration that nothing is left of, or that is left the same as one queued before it
(an ``enqueue`` configuration or an earlier warm-start one), is left out and counted.
They are queued after the spec's own ``enqueue`` configurations, study by study in the
order the spec lists them (``auto``: most recent first), and count toward the budget:
those past it are left out, and the note says how many and from which studies. Only
studies of the new study's own project count: another project's is "not found" (named)
or not seen (``auto``), so a warm start cannot copy another project's configurations.
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
    """The configurations a warm start queues, and what it left out.

    Attributes:
        studies: The source studies, in the order their configurations are queued.
        configs: The configurations queued, in order.
        dropped: A line per param value left out of a configuration.
        duplicates: Configurations left out as the same as one queued before them (an
            ``enqueue`` configuration or an earlier warm-start one) once the params the new
            space cannot take are dropped.
        nothing_fits: Configurations left out as none of their params fit the new space.
        over_budget: Configurations left out as the budget had no room for them, by source
            study (in ``studies`` order).
    """

    studies: list[int] = field(default_factory=list)
    configs: list[dict[str, Any]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    duplicates: int = 0
    nothing_fits: int = 0
    over_budget: dict[int, int] = field(default_factory=dict)

    def note(self) -> dict[str, Any]:
        """What the study's attributes record about it."""
        return {
            "studies": self.studies,
            "enqueued": len(self.configs),
            "dropped": self.dropped,
            "duplicates": self.duplicates,
            "nothing_fits": self.nothing_fits,
            "over_budget": sum(self.over_budget.values()),
            "over_budget_from": {str(study): count for study, count in self.over_budget.items()},
        }

    def keep_first(self, room: int, origins: list[int]) -> None:
        """Keeps the first ``room`` configurations, counting the others by their source
        study (``origins[i]`` is that of ``configs[i]``)."""
        room = max(0, room)
        for study_id in origins[room:]:
            self.over_budget[study_id] = self.over_budget.get(study_id, 0) + 1
        self.configs = self.configs[:room]


def plan_warm_start(
    store: Store, spec: StudySpec, fingerprint: str | None, project: str
) -> WarmStart:
    """The configurations of ``spec``'s warm start, study by study in the order it lists
    them (each study's best first), at most the budget its ``enqueue`` leaves, from
    studies of ``project`` only.

    Raises:
        SpecError: If a named study does not exist (``warm_start.studies[i]``).
    """
    warm = spec.warm_start
    if warm is None:
        return WarmStart()
    with store.read() as connection:
        sources = _source_studies(connection, warm.studies, fingerprint, project)
        plan = WarmStart(studies=[study_id for study_id, _ in sources])
        origins: list[int] = []
        seen = {json.dumps(config, sort_keys=True) for config in spec.enqueue}
        for study_id, directions in sources:
            maximize = directions[0] == "maximize"
            trial_ids = optuna_rows.top_trial_ids(connection, study_id, maximize, warm.top_k)
            for trial in optuna_rows.load_trials(connection, trial_ids):
                config = _fit(spec, trial.params, f"study {study_id} trial {trial.number}", plan)
                key = json.dumps(config, sort_keys=True)
                if not config:
                    plan.nothing_fits += 1
                elif key in seen:
                    plan.duplicates += 1
                else:
                    seen.add(key)
                    plan.configs.append(config)
                    origins.append(study_id)
    plan.keep_first(spec.budget.n_trials - len(spec.enqueue), origins)
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
        rows = _named_studies(connection, columns, named)
    return [(int(row.study_id), _directions(row.spec)) for row in rows]


def _named_studies(
    connection: sa.engine.Connection, columns: sa.Select[Any], named: list[int]
) -> list[sa.Row[Any]]:
    """The rows of the ``named`` studies in the order the spec lists them (once each).

    Raises:
        SpecError: If a named study does not exist (``warm_start.studies[i]``).
    """
    studies = tables.studies
    rows = connection.execute(
        columns.where(studies.c.study_id.in_(list(named)), studies.c.status != DELETING)
    ).all()
    found = {int(row.study_id): row for row in rows}
    missing = [
        FieldError(("warm_start", "studies", index), f"study {study_id} not found")
        for index, study_id in enumerate(named)
        if study_id not in found
    ]
    if missing:
        raise SpecError(missing)
    return [found[study_id] for study_id in dict.fromkeys(named)]


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
