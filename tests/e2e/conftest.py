"""Fixtures of the end-to-end tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.fleet import Fleet


@pytest.fixture
def fleet_factory(tmp_path: Path) -> Iterator[Callable[..., Fleet]]:
    """Makes fleets; kills their workers at the end of the test."""
    fleets: list[Fleet] = []

    def make(url: str, *extra: str, env: dict[str, str] | None = None) -> Fleet:
        fleet = Fleet(url, tmp_path, *extra, env=env)
        fleets.append(fleet)
        return fleet

    yield make
    for fleet in fleets:
        fleet.stop()
