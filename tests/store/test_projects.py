"""Projects in the store: a study's owner, listings by project, per-project limits."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from automl.config import Limits
from automl.spec import StudySpec
from automl.store import (
    DEFAULT_PROJECT,
    ProjectLimitError,
    Store,
    StudyStateError,
    cancel_study,
    list_studies,
    study_project,
    submit_study,
)


def test_a_study_belongs_to_its_submitters_project(
    store: Store, tiny_spec: Callable[..., StudySpec]
) -> None:
    local = submit_study(store, tiny_spec())
    vision = submit_study(store, tiny_spec(), project="vision")

    assert (local.project, vision.project) == (DEFAULT_PROJECT, "vision")
    assert study_project(store, vision.id) == "vision"
    assert study_project(store, 2**31 - 1) is None
    assert [s.id for s in list_studies(store, project="vision").data] == [vision.id]
    assert list_studies(store, project="vision").count == 1
    assert list_studies(store, project="nobody").count == 0
    assert {s.id for s in list_studies(store).data} == {local.id, vision.id}


def test_an_idempotency_key_is_the_projects_own(
    store: Store, tiny_spec: Callable[..., StudySpec]
) -> None:
    first = submit_study(store, tiny_spec(), "key-1", project="vision")

    assert submit_study(store, tiny_spec(), "key-1", project="vision").id == first.id
    other = submit_study(store, tiny_spec(name="changed"), "key-1", project="audio")
    assert other.id != first.id and other.project == "audio"
    assert submit_study(store, tiny_spec(name="changed"), "key-1", project="audio").id == other.id
    assert [s.id for s in list_studies(store, project="audio").data] == [other.id]
    with pytest.raises(StudyStateError, match=f"already used for study {first.id}"):
        submit_study(store, tiny_spec(name="changed"), "key-1", project="vision")


def test_a_study_name_says_nothing_of_other_projects(
    store: Store, tiny_spec: Callable[..., StudySpec]
) -> None:
    theirs = [submit_study(store, tiny_spec(name="secret"), project="a").name for _ in "ab"]
    ours = [submit_study(store, tiny_spec(name="secret"), project="b").name for _ in "abc"]

    assert theirs == ["secret", "secret-2"]
    assert re.fullmatch(r"secret-[0-9a-f]{12}", ours[0]), ours
    assert re.fullmatch(r"secret-2-[0-9a-f]{12}", ours[1]), ours
    assert ours[2] == "secret-3"
    assert submit_study(store, tiny_spec(name="secret"), project="a").name.startswith("secret-3-")
    names = [summary.study_name for summary in store.storage.get_all_studies()]
    assert len(names) == len(set(names)) == 6


def test_project_limits_count_kept_and_active_studies(
    store: Store, tiny_spec: Callable[..., StudySpec]
) -> None:
    limits = Limits(max_studies_per_project=3, max_active_studies_per_project=2)
    first = submit_study(store, tiny_spec(), project="vision", limits=limits)
    submit_study(store, tiny_spec(), project="vision", limits=limits)

    with pytest.raises(ProjectLimitError, match="max_active_studies_per_project = 2"):
        submit_study(store, tiny_spec(), project="vision", limits=limits)
    submit_study(store, tiny_spec(), project="audio", limits=limits)
    cancel_study(store, first.id)
    submit_study(store, tiny_spec(), project="vision", limits=limits)
    with pytest.raises(ProjectLimitError, match="AUTOML_LIMIT_MAX_STUDIES_PER_PROJECT"):
        submit_study(store, tiny_spec(), project="vision", limits=limits)
    assert list_studies(store, project="vision").count == 3
    submit_study(store, tiny_spec(), project="vision")  # local commands pass no limits
