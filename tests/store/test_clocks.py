"""Machines whose clocks disagree (no NTP, a VM resumed from suspend, a clock stepped):
every time the store compares with another comes from one clock, the database's (or, for
files, the file server's), whatever the clock of the machine that acts.

Found by a tester: a trial reaped by another machine lasted -7,168 s; a reaper an hour
ahead removed a submission in flight; a machine an hour ahead of the NFS server removed
another machine's write in progress.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import optuna
import pytest

import automl.store.studies as studies_module
from automl import file_clock
from automl.file_clock import folder_now
from automl.spec import StudySpec
from automl.store import (
    FolderArtifactStore,
    Store,
    attrs,
    claim,
    create_trial,
    optuna_rows,
    remove_orphans,
    running_trial_template,
    submit_study,
)
from automl.store.status import now

SpecFactory = Callable[..., StudySpec]
HOURS_AHEAD = 2


class _AheadDatetime(datetime):
    """``datetime`` on a machine whose clock is hours ahead."""

    @classmethod
    def now(cls, tz: Any = None) -> Any:
        return datetime.now(tz) + timedelta(hours=HOURS_AHEAD)


@pytest.fixture
def clock_ahead(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process's wall clock (``time.time``) hours ahead of the database's."""
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + HOURS_AHEAD * 3600)


def test_a_trial_lasts_what_the_database_clock_says_whatever_its_machines_clocks_say(
    store: Store, tiny_spec: SpecFactory
) -> None:
    """A worker hours ahead starts the trial (sending its start, as through a proxy), and
    another machine ends it: the trial lasts the moment in between, not minus hours."""
    study = submit_study(store, tiny_spec())
    lease = claim(store, "ahead")
    assert lease is not None
    template = running_trial_template({attrs.LEASE: lease.key, attrs.TICKET: lease.ticket_id})
    template.datetime_start = _AheadDatetime.now()
    trial_id, _ = create_trial(store, store.storage, study.id, template, lease)
    witness = optuna.load_study(study_name="tiny", storage=store.storage).ask()  # Optuna's own
    with store.write() as connection:
        assert optuna_rows.fail_running_trial(connection, trial_id, {})

    trial = store.storage.get_trial(trial_id)
    assert trial.datetime_start is not None and witness.datetime_start is not None
    assert abs(trial.datetime_start - witness.datetime_start) < timedelta(seconds=60)
    assert trial.duration is not None
    assert timedelta(0) <= trial.duration < timedelta(seconds=60)


def test_a_study_is_created_at_the_database_clock(
    store: Store, tiny_spec: SpecFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(studies_module, "datetime", _AheadDatetime)

    created = submit_study(store, tiny_spec()).created_at
    with store.read() as connection:
        clock = now(connection)

    assert created is not None
    assert abs(created.timestamp() - clock) < 60


def test_a_reaper_ahead_of_the_database_leaves_a_submission_in_flight(
    store: Store, clock_ahead: None
) -> None:
    """A submission stamped its Optuna study a moment ago and has not written its row yet:
    the reaper, hours ahead, must not take it for a leftover (the submission then failed)."""
    with store.read() as connection:
        stamped = datetime.fromtimestamp(now(connection), UTC)
    in_flight = optuna.create_study(storage=store.storage, study_name="in-flight")
    in_flight.set_user_attr(attrs.CREATED_AT, stamped.isoformat())

    assert remove_orphans(store, min_age_s=600) == []
    assert [s.study_name for s in store.storage.get_all_studies()] == ["in-flight"]


def test_a_machine_ahead_of_the_file_server_leaves_a_write_in_progress(
    tmp_path: Path, clock_ahead: None
) -> None:
    folder = FolderArtifactStore(tmp_path / "art")
    folder.write("kept", io.BytesIO(b"1"))
    writing = tmp_path / "art" / ".tmp-writing"
    writing.write_bytes(b"half")  # touched a moment ago by its writer

    assert folder.remove_stale_temporaries() == []
    assert writing.exists()


def test_an_annotation_ahead_of_the_file_server_leaves_another_write_in_progress(
    tmp_path: Path, clock_ahead: None
) -> None:
    target = tmp_path / "labels.csv"
    writing = tmp_path / ".labels.csv.0123456789abcdef.tmp"
    writing.write_text("path,label\n")
    stale = tmp_path / ".labels.csv.fedcba9876543210.tmp"
    stale.write_text("path,label\n")
    long_ago = os.stat(writing).st_mtime - file_clock.STALE_SIBLING_S - 1
    os.utime(stale, (long_ago, long_ago))

    file_clock.remove_stale_siblings(target, ".", ".tmp")

    assert sorted(p.name for p in tmp_path.iterdir()) == [writing.name]


def test_the_file_clock_is_the_time_a_new_file_gets_not_this_machines(
    tmp_path: Path, clock_ahead: None
) -> None:
    measured = folder_now(tmp_path, ".tmp-")
    probe = tmp_path / "probe"
    probe.write_bytes(b"")

    assert measured is not None
    assert abs(measured - probe.stat().st_mtime) < 60
    assert time.time() - measured > HOURS_AHEAD * 3600 - 60  # this machine's is hours ahead
    assert sorted(tmp_path.iterdir()) == [probe]  # the clock's own probe is gone


def test_a_folder_where_no_file_can_be_made_has_no_clock_and_no_sweep(tmp_path: Path) -> None:
    """Without the file server's clock a sweep removes nothing, rather than judge by this
    machine's (an inode quota refuses new files, yet lets old ones be removed)."""
    assert folder_now(tmp_path / "missing", ".tmp-") is None


def test_a_submission_ahead_of_the_database_waits_for_one_in_flight(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two identical submissions at once are name and name-2: a second submission hours
    ahead took the first's fresh Optuna study for a leftover, and salted its name."""
    with store.read() as connection:
        stamped = datetime.fromtimestamp(now(connection), UTC)
    in_flight = optuna.create_study(storage=store.storage, study_name="tiny")
    in_flight.set_user_attr(attrs.CREATED_AT, stamped.isoformat())
    monkeypatch.setattr(studies_module, "datetime", _AheadDatetime)
    monkeypatch.setattr(studies_module, "NAME_WAIT_S", 3.0)

    started = time.monotonic()
    held = studies_module._held_by_a_submission(store, "default", "tiny", "tiny")

    assert not held  # its row never came
    assert time.monotonic() - started >= 1.0  # but it was waited for (3 s from its stamp)
