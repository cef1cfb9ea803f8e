"""Once-made artifacts (GAN generators) are shared by every machine through the store."""

from __future__ import annotations

from pathlib import Path

from automl.store import Store
from automl.train.imbalance import LocalArtifactCache
from automl.worker.shared_cache import SharedArtifactCache


def test_a_second_machine_reads_what_the_first_made(store: Store, tmp_path: Path) -> None:
    made: list[str] = []

    def make(machine: str) -> bytes:
        made.append(machine)
        return b"generator" * 1000

    uses: list[tuple[str, str]] = []
    first = SharedArtifactCache(
        store.artifacts,
        LocalArtifactCache(tmp_path / "machine-1"),
        on_use=lambda key: uses.append(("one", key)),
    )
    second = SharedArtifactCache(
        store.artifacts,
        LocalArtifactCache(tmp_path / "machine-2"),
        on_use=lambda key: uses.append(("two", key)),
    )

    assert first.get_or_create("gan-abc-0-400", lambda: make("one")) == b"generator" * 1000
    assert second.get_or_create("gan-abc-0-400", lambda: make("two")) == b"generator" * 1000
    assert first.get_or_create("gan-abc-0-400", lambda: make("one again")) == b"generator" * 1000
    assert made == ["one"]
    # Another key is another artifact.
    assert second.get_or_create("gan-abc-1-400", lambda: b"other") == b"other"
    # Each use is recorded once, before the artifact is read or made (which keeps it).
    assert uses == [("one", "gan-abc-0-400"), ("two", "gan-abc-0-400"), ("two", "gan-abc-1-400")]
