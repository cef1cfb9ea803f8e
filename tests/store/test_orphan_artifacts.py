"""Artifacts that nothing refers to (a process killed between writing one and recording
it) are removed once old from the SQL artifact store; everything something refers to
stays, on each backend; a folder, which other stores may share, is never swept."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from optuna.artifacts.exceptions import ArtifactNotFound

from automl.spec import StudySpec
from automl.store import FolderArtifactStore, Store, attrs, open_store, reaper, submit_study, tables
from automl.store.faults import StorageUnavailableError
from automl.store.orphan_artifacts import ORPHAN_ARTIFACT_AGE_S, remove_orphan_artifacts
from automl.store.reaper import Reaper
from automl.store.shared_artifacts import shared_artifact_id, shared_use_attr
from tests.store.conftest import start_trial

SpecFactory = Callable[..., StudySpec]

REFERENCED = {
    "uploaded-to-a-trial": "an artifacts:ID system attribute of a trial (upload_artifact)",
    "uploaded-to-a-study": "an artifacts:ID system attribute of a study (optuna-dashboard)",
    "weights-attribute": "a trial's automl.weights",
    "checkpoint-1-1-abc": "a ticket's checkpoint",
    "refit-weights": "a refit's weights",
    "refit-card": "a refit's card",
    shared_artifact_id("gan-data-0-400"): "a study's record of a shared artifact it used",
}


def _refer_to_each(store: Store, tiny_spec: SpecFactory) -> None:
    study_id = submit_study(store, tiny_spec()).id
    lease, trial_id = start_trial(store, study_id)
    storage = store.storage
    storage.set_trial_system_attr(trial_id, "artifacts:uploaded-to-a-trial", {"mimetype": "x"})
    storage.set_study_system_attr(study_id, "artifacts:uploaded-to-a-study", {"mimetype": "x"})
    storage.set_study_system_attr(study_id, shared_use_attr("gan-data-0-400"), True)
    storage.set_trial_user_attr(trial_id, attrs.WEIGHTS, "weights-attribute")
    with store.write() as connection:
        connection.execute(
            tables.tickets.update()
            .where(tables.tickets.c.ticket_id == lease.ticket_id)
            .values(checkpoint="checkpoint-1-1-abc")
        )
        connection.execute(
            tables.refits.insert().values(
                study_id=study_id,
                state="done",
                weights="refit-weights",
                card="refit-card",
                requested_at=time.time(),
            )
        )


def _exists(store: Store, artifact_id: str) -> bool:
    try:
        with store.artifacts.open_reader(artifact_id) as reader:
            reader.read()
    except ArtifactNotFound:
        return False
    return True


@pytest.fixture
def sql_artifacts_store(storage_url: str, tmp_path: Path) -> Iterator[Store]:
    """A store on each backend whose artifacts live in its database (PostgreSQL's default,
    and here SQLite's too)."""
    opened = open_store(storage_url, artifact_store="sql", artifacts_dir=tmp_path / "unused")
    yield opened
    opened.close()


def test_only_old_artifacts_that_nothing_refers_to_are_removed(
    sql_artifacts_store: Store, tiny_spec: SpecFactory
) -> None:
    store = sql_artifacts_store
    _refer_to_each(store, tiny_spec)
    for artifact_id in [*REFERENCED, "orphan-weights", "orphan_with_underscore"]:
        store.artifacts.write(artifact_id, io.BytesIO(b"bytes of " + artifact_id.encode()))

    assert remove_orphan_artifacts(store) == []  # written a moment ago: maybe being recorded
    removed = remove_orphan_artifacts(store, min_age_s=-1.0)  # as if a day had passed

    assert removed == ["orphan-weights", "orphan_with_underscore"]
    assert [name for name in REFERENCED if not _exists(store, name)] == []
    assert not _exists(store, "orphan-weights")
    assert remove_orphan_artifacts(store, min_age_s=-1.0) == []


def test_a_weights_attribute_of_another_shape_is_no_reference(
    sql_artifacts_store: Store, tiny_spec: SpecFactory
) -> None:
    """``automl.weights`` written by hand as something else than an id breaks nothing."""
    store = sql_artifacts_store
    study_id = submit_study(store, tiny_spec()).id
    _, trial_id = start_trial(store, study_id)
    store.storage.set_trial_user_attr(trial_id, attrs.WEIGHTS, {"not": "an id"})
    store.artifacts.write("orphan", io.BytesIO(b"x"))

    assert remove_orphan_artifacts(store, min_age_s=-1.0) == ["orphan"]
    assert store.storage.get_trial(trial_id).user_attrs[attrs.WEIGHTS] == {"not": "an id"}


def test_old_artifacts_are_swept_by_age_and_a_folder_never(
    sql_artifacts_store: Store, sqlite_store: Store, tiny_spec: SpecFactory
) -> None:
    """By the database clock: a day-old orphan goes, a younger one stays. A folder may
    hold other stores' files (two SQLite files beside one automl-artifacts), or the
    database itself: nothing in it is removed, referred to or not."""
    store = sql_artifacts_store
    store.artifacts.write("old-orphan", io.BytesIO(b"x"))
    store.artifacts.write("young-orphan", io.BytesIO(b"x"))
    with store.write() as connection:
        connection.execute(
            tables.artifacts.update()
            .where(tables.artifacts.c.artifact_id == "old-orphan")
            .values(created_at=tables.artifacts.c.created_at - ORPHAN_ARTIFACT_AGE_S - 60)
        )
    assert remove_orphan_artifacts(store) == ["old-orphan"]
    assert _exists(store, "young-orphan")

    folder = sqlite_store.artifacts
    assert isinstance(folder, FolderArtifactStore)
    folder.write("another-stores-weights", io.BytesIO(b"x"))
    (folder.directory / "automl.db").write_bytes(b"SQLite format 3")
    assert remove_orphan_artifacts(sqlite_store, min_age_s=-1.0) == []
    assert sorted(p.name for p in folder.directory.iterdir() if not p.name.startswith(".")) == [
        "another-stores-weights",
        "automl.db",
    ]


def test_a_dashboard_upload_recorded_the_older_way_is_kept(
    sql_artifacts_store: Store, tiny_spec: SpecFactory
) -> None:
    store = sql_artifacts_store
    study_id = submit_study(store, tiny_spec()).id
    store.storage.set_study_system_attr(study_id, "dashboard:artifacts:7:legacy-upload", {})
    store.artifacts.write("legacy-upload", io.BytesIO(b"x"))

    assert remove_orphan_artifacts(store, min_age_s=-1.0) == []


def test_a_reaper_sweeps_within_its_first_hour_then_every_six_hours(
    sqlite_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    sweeps: list[Store] = []
    monkeypatch.setattr(reaper, "remove_orphan_artifacts", sweeps.append)
    sweeper = Reaper(sqlite_store, grace=60, interval=3600)
    assert time.monotonic() <= sweeper._artifacts_due <= time.monotonic() + 3600

    sweeper.run_once()
    assert sweeps == []
    sweeper._artifacts_due = time.monotonic()  # its moment came
    sweeper.run_once()
    sweeper.run_once()
    assert sweeps == [sqlite_store]
    assert sweeper._artifacts_due >= time.monotonic() + reaper.ORPHAN_ARTIFACT_SWEEP_INTERVAL_S - 60


def test_a_sweep_cut_short_by_an_outage_is_tried_again_in_ten_minutes(
    sqlite_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not at every pass: a fault of the sweep alone would fail every pass, and no trial
    would be reaped again."""

    def outage(_: Store) -> list[str]:
        raise StorageUnavailableError("database away")

    monkeypatch.setattr(reaper, "remove_orphan_artifacts", outage)
    sweeper = Reaper(sqlite_store, grace=60, interval=3600)
    sweeper._artifacts_due = time.monotonic()

    sweeper.run_once()

    wait = sweeper._artifacts_due - time.monotonic()
    assert reaper.ORPHAN_ARTIFACT_RETRY_S - 60 <= wait <= reaper.ORPHAN_ARTIFACT_RETRY_S
