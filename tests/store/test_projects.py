"""Projects in the store: a study's owner, listings by project, per-project limits."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from optuna.study import StudyDirection
from optuna.trial import TrialState

import automl.store.studies as studies_module
from automl.config import Limits
from automl.spec import StudySpec
from automl.store import (
    DEFAULT_PROJECT,
    ProjectLimitError,
    Store,
    StudyDetail,
    StudyStateError,
    StudyStatus,
    attrs,
    cancel_study,
    end_study_if_done,
    get_study,
    list_studies,
    rerun_failed,
    resume_study,
    study_project,
    submit_study,
)
from tests.store.conftest import drive


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


def test_a_numbered_name_keeps_to_the_names_length(
    store: Store, tiny_spec: Callable[..., StudySpec]
) -> None:
    """Found by a tester: a 100-character name's second study was named with 102."""
    longest = "n" * 100
    names = [submit_study(store, tiny_spec(name=longest)).name for _ in range(3)]
    assert names == [longest, "n" * 98 + "-2", "n" * 98 + "-3"]
    again = tiny_spec(name=names[1])  # a numbered name is a valid name, submitted again
    assert submit_study(store, again).name == "n" * 98 + "-4"


def test_a_study_name_says_nothing_of_other_projects(
    store: Store, tiny_spec: Callable[..., StudySpec]
) -> None:
    """Once a name another project held came back salted (``secret-1f3a...``) and a free
    one plain: one study's cost told whether any project had a name."""
    theirs = [submit_study(store, tiny_spec(name="secret"), project="a").name for _ in "ab"]
    ours = [submit_study(store, tiny_spec(name="secret"), project="b").name for _ in "abc"]
    mine = [submit_study(store, tiny_spec(name="secret")).name for _ in "ab"]

    assert theirs == ["secret", "secret-2"]
    assert ours == ["secret", "secret-2", "secret-3"]
    assert mine == ["secret", "secret-2"]
    names = {summary.study_name for summary in store.storage.get_all_studies()}
    assert names == {
        "a/secret",
        "a/secret-2",
        "b/secret",
        "b/secret-2",
        "b/secret-3",
        "secret",
        "secret-2",
    }


def test_a_taken_optuna_name_gets_a_random_suffix(
    store: Store, tiny_spec: Callable[..., StudySpec], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A leftover (a crashed submit, a study made in optuna-dashboard) holds the name."""
    store.storage.create_new_study([StudyDirection.MAXIMIZE], "vision/secret")
    monkeypatch.setattr(studies_module, "NAME_WAIT_S", 0.2)  # for a row that never comes

    first = submit_study(store, tiny_spec(name="secret"), project="vision").name
    second = submit_study(store, tiny_spec(name="secret"), project="vision").name

    assert re.fullmatch(r"secret-[0-9a-f]{12}", first), first
    assert second == "secret-2"


def test_a_crashed_submits_leftover_is_salted_without_waiting(
    store: Store, tiny_spec: Callable[..., StudySpec]
) -> None:
    """Only an Optuna study that may still get its row is waited for (a reviewer: every
    submission of a leftover's name waited the whole ``NAME_WAIT_S``)."""
    leftover = store.storage.create_new_study([StudyDirection.MAXIMIZE], "vision/secret")
    an_hour_ago = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    store.storage.set_study_user_attr(leftover, attrs.CREATED_AT, an_hour_ago)

    started = time.monotonic()
    name = submit_study(store, tiny_spec(name="secret"), project="vision").name

    assert re.fullmatch(r"secret-[0-9a-f]{12}", name), name
    assert time.monotonic() - started < studies_module.NAME_WAIT_S / 2

    # A reviewer: a salted 100-character name was 113 characters long.
    longest = "s" * 100
    old = store.storage.create_new_study([StudyDirection.MAXIMIZE], f"vision/{longest}")
    store.storage.set_study_user_attr(old, attrs.CREATED_AT, an_hour_ago)
    salted = [submit_study(store, tiny_spec(name=longest), project="vision").name for _ in "ab"]
    assert all(re.fullmatch(r"s{87}-[0-9a-f]{12}", name) for name in salted), salted
    assert salted[0] != salted[1]


def test_a_study_made_with_another_tool_is_salted_after_a_short_wait(
    store: Store, tiny_spec: Callable[..., StudySpec]
) -> None:
    """A study without automl's ``created_at`` (plain Optuna, optuna-dashboard) is not a
    submission in flight: waited for only ``UNMARKED_WAIT_S``, not ``NAME_WAIT_S``."""
    store.storage.create_new_study([StudyDirection.MAXIMIZE], "vision/secret")

    started = time.monotonic()
    name = submit_study(store, tiny_spec(name="secret"), project="vision").name

    assert re.fullmatch(r"secret-[0-9a-f]{12}", name), name
    assert time.monotonic() - started < studies_module.NAME_WAIT_S - 1


def _submitted_at_once(
    store: Store, specs: list[StudySpec], monkeypatch: pytest.MonkeyPatch, key: str | None = None
) -> list[StudyDetail]:
    """Submits ``specs`` from one thread each, every submission holding its Optuna study a
    moment before its row is written (the window in which they race)."""
    set_attr = store.storage.set_study_user_attr

    def slowly(*args: Any, **kwargs: Any) -> None:
        time.sleep(0.1)
        set_attr(*args, **kwargs)

    monkeypatch.setattr(store.storage, "set_study_user_attr", slowly)
    start = threading.Barrier(len(specs))
    done: list[StudyDetail] = []

    def submit(spec: StudySpec) -> None:
        start.wait()
        done.append(submit_study(store, spec, key))

    threads = [threading.Thread(target=submit, args=(spec,)) for spec in specs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(done) == len(specs)
    return done


def test_identical_submissions_at_once_are_numbered_not_salted(
    store: Store, tiny_spec: Callable[..., StudySpec], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by the tester: 8 at once were named ``dup``, ``dup-57d230de601e``, ``dup-2``,
    ``dup-2-720104706461``...: a name whose submission had not yet written its row looked
    like a leftover."""
    done = _submitted_at_once(store, [tiny_spec(name="dup") for _ in range(4)], monkeypatch)

    assert sorted(study.name for study in done) == ["dup", "dup-2", "dup-3", "dup-4"]


def test_submissions_at_once_with_one_idempotency_key_make_one_plainly_named_study(
    store: Store, tiny_spec: Callable[..., StudySpec], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by the tester: the one study was named ``idem-08a973f45bc3`` although no other
    study held ``idem``."""
    specs = [tiny_spec(name="idem") for _ in range(4)]
    done = _submitted_at_once(store, specs, monkeypatch, key="key-1")

    assert {(study.id, study.name) for study in done} == {(done[0].id, "idem")}
    assert [summary.study_name for summary in store.storage.get_all_studies()] == ["idem"]


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


def test_reopening_a_study_counts_against_the_active_limit(
    store: Store, tiny_spec: Callable[..., StudySpec]
) -> None:
    """Once cancel, submit and resume took a project past its active limit without end."""
    limits = Limits(max_active_studies_per_project=2)
    budget = {"n_trials": 2, "max_failed": 5}
    failed = submit_study(store, tiny_spec(budget=budget), project="vision", limits=limits)
    drive(store, failed.id, [0.5, TrialState.FAIL])
    assert end_study_if_done(store, failed.id) == StudyStatus.COMPLETED
    cancelled = submit_study(store, tiny_spec(), project="vision", limits=limits)
    cancel_study(store, cancelled.id)
    for _ in range(2):
        submit_study(store, tiny_spec(), project="vision", limits=limits)

    with pytest.raises(ProjectLimitError, match="max_active_studies_per_project = 2"):
        resume_study(store, cancelled.id, limits=limits)
    with pytest.raises(ProjectLimitError, match="max_active_studies_per_project = 2"):
        rerun_failed(store, failed.id, limits=limits)
    assert list_studies(store, project="vision", status=StudyStatus.QUEUED).count == 2
    assert get_study(store, cancelled.id).status == StudyStatus.CANCELLED
    assert get_study(store, failed.id).counts.fail == 1
    assert resume_study(store, cancelled.id).status == StudyStatus.QUEUED  # local: no limits
