"""The sightings that confirm a stale post-study job claim before it is taken over."""

from __future__ import annotations

import time
from typing import Any, NamedTuple

from automl.store.jobs import Sightings


class Claim(NamedTuple):
    study_id: int
    attempt: int
    claimed_at: float | None


def _rows(*claims: Claim) -> list[Any]:
    return list(claims)


def test_a_claim_is_confirmed_once_seen_unchanged_for_the_time_asked() -> None:
    sightings = Sightings()
    assert sightings.confirmed(_rows(Claim(5, 1, 100.0)), 0.2) == set()
    time.sleep(0.25)
    assert sightings.confirmed(_rows(Claim(5, 1, 100.0)), 0.2) == {5}


def test_a_beat_or_a_new_claim_starts_the_sighting_again() -> None:
    sightings = Sightings()
    sightings.confirmed(_rows(Claim(5, 1, 100.0)), 0.2)
    time.sleep(0.25)
    assert sightings.confirmed(_rows(Claim(5, 1, 160.0)), 0.2) == set()  # it beat
    time.sleep(0.25)
    assert sightings.confirmed(_rows(Claim(5, 2, 160.0)), 0.2) == set()  # taken over


def test_a_look_for_another_study_keeps_the_sightings_of_the_others() -> None:
    """A reviewer: behind a proxy, a --study 7 worker's claims wiped the sighting of
    study 5's stale refit at every poll, so it was never taken over."""
    sightings = Sightings()
    sightings.confirmed(_rows(Claim(5, 1, 100.0)), 0.2)
    sightings.confirmed(_rows(Claim(7, 1, 100.0)), 0.2)
    time.sleep(0.25)
    assert sightings.confirmed(_rows(Claim(5, 1, 100.0)), 0.2) == {5}


def test_after_a_database_error_every_sighting_starts_again() -> None:
    sightings = Sightings()
    sightings.confirmed(_rows(Claim(5, 1, 100.0)), 0.2)
    time.sleep(0.25)
    sightings.forget()
    assert sightings.confirmed(_rows(Claim(5, 1, 100.0)), 0.2) == set()
