"""Projects: the study's owner (the submitting API key's project), and per-project quotas.

A study's project is stored once, at submit, in its ``automl_studies`` row; the API shows
a study only to keys of its project (and to admin keys). Workers do not look at it.
"""

from __future__ import annotations

import re
import secrets

import sqlalchemy as sa

from automl.config import Limits
from automl.spec import MAX_NAME_CHARS, FieldError, SpecError
from automl.store import tables
from automl.store.status import ACTIVE
from automl.store.storage import Store, retrying_read
from automl.store.tables import DELETING

DEFAULT_PROJECT = "default"
"""The project of studies submitted without a key (``automl run``, an API without keys)."""


class ProjectLimitError(SpecError):
    """A submission would take a project over one of its ``Limits`` (a 422)."""


@retrying_read
def study_project(store: Store, study_id: int) -> str | None:
    """The project of a study, or None when there is no such study (or it is being
    deleted): one primary-key read."""
    studies = tables.studies
    with store.read() as connection:
        return connection.scalar(
            sa.select(studies.c.project).where(
                studies.c.study_id == study_id, studies.c.status != DELETING
            )
        )


def optuna_study_name(project: str, name: str) -> str:
    """The Optuna name of ``project``'s study ``name``: ``project/name``, or ``name`` in
    the default project (study and project names hold no ``/``, so these never clash)."""
    return name if project == DEFAULT_PROJECT else f"{project}/{name}"


def automl_study_name(optuna_name: str) -> str:
    """A study's name from its Optuna name (``project/name`` -> ``name``)."""
    return optuna_name.rpartition("/")[2]


SALT_HEX = 12
"""Hex digits of the random suffix of a name that another project's study holds."""
_SALTED = re.compile(f"^(.+)-[0-9a-f]{{{SALT_HEX}}}$")


def salted(name: str) -> str:
    """``name`` with a random, unguessable suffix (``-`` and ``SALT_HEX`` hex digits), cut
    short first where the whole would pass the names' length (``MAX_NAME_CHARS``)."""
    return f"{_salt_base(name)}-{secrets.token_hex(SALT_HEX // 2)}"


def _salt_base(name: str) -> str:
    return name[: MAX_NAME_CHARS - 1 - SALT_HEX]


def project_study_names(
    connection: sa.engine.Connection, project: str, names: list[str]
) -> set[str]:
    """Which of ``names`` the studies of ``project`` hold, as they are or ``salted``."""
    studies = tables.studies
    bases = {name: _salt_base(name) for name in names}
    # ``_`` is LIKE's one-character wildcard (spec names may hold it too, so LIKE can
    # match more): the pattern below keeps the exact ones.
    like = [studies.c.name.like(f"{base}-{'_' * SALT_HEX}") for base in set(bases.values())]
    query = sa.select(studies.c.name).where(
        studies.c.project == project, sa.or_(studies.c.name.in_(names), *like)
    )
    held = set(connection.scalars(query))
    salted_bases = {match.group(1) for match in map(_SALTED.match, held) if match is not None}
    # A name cut short to be salted may be any of the names it begins: only whole ones count.
    return {
        name for name in names if name in held or (bases[name] == name and name in salted_bases)
    }


def check_project_limits(store: Store, project: str, limits: Limits) -> None:
    """Refuses a new study in ``project`` when the project is at one of its limits.

    Counted with one aggregate before anything is written. Two submissions racing at the
    limit may both pass: the quota bounds cost, it is not an invariant.

    Raises:
        ProjectLimitError: Naming the limit and its setting.
    """
    with store.read() as connection:
        check_project_room(connection, project, limits, new_study=True)


def check_project_room(
    connection: sa.Connection, project: str, limits: Limits, *, new_study: bool
) -> None:
    """Refuses to add a study to ``project`` (``new_study``) or to reopen one of its ended
    studies when that would take it over a limit; reads on ``connection``.

    Raises:
        ProjectLimitError: Naming the limit and its setting.
    """
    studies = tables.studies
    active = sa.func.count().filter(studies.c.status.in_(ACTIVE))
    row = connection.execute(
        sa.select(sa.func.count().label("kept"), active.label("active")).where(
            studies.c.project == project, studies.c.status != DELETING
        )
    ).one()
    if new_study and row.kept >= limits.max_studies_per_project:
        _refuse(project, f"has {row.kept} studies", "max_studies_per_project", limits)
    if row.active >= limits.max_active_studies_per_project:
        _refuse(
            project,
            f"has {row.active} queued or running studies",
            "max_active_studies_per_project",
            limits,
        )


def _refuse(project: str, state: str, name: str, limits: Limits) -> None:
    advice = "delete one first" if name == "max_studies_per_project" else "wait or cancel one"
    raise ProjectLimitError(
        [
            FieldError(
                (),
                f"project {project!r} {state}, its limit {name} = {getattr(limits, name)} "
                f"(AUTOML_LIMIT_{name.upper()}); {advice}",
            )
        ]
    )
