"""What one trial makes for all others (a trained GAN generator), shared by every machine.

A trial asks for an artifact by key; the first one on a machine looks in the store's
artifact store (where a worker on any machine may have put it) and makes it only if it
is not there, while the other trials of that machine wait on a local lock and then read
the local copy. Two machines racing may each make it once; both write the same content.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable

from optuna.artifacts.exceptions import ArtifactNotFound

from automl.store import ArtifactDamagedError, ArtifactStore
from automl.store.shared_artifacts import shared_artifact_id
from automl.train.imbalance import LocalArtifactCache

logger = logging.getLogger("automl.worker")


class SharedArtifactCache:
    """An ``ArtifactCache`` backed by the shared artifact store, with a local copy.

    Args:
        artifacts: The store's artifact store (SQL, folder, S3, or through the proxy).
        local: The machine's cache, which also serializes its processes.
        on_use: Called with each key before it is first used: whether the study recorded
            the use, which keeps the artifact until the last such study is deleted
            (``automl.store.shared_artifacts``). Unrecorded, an artifact is made and kept on
            this machine only: a shared copy no study records would stay for good.
    """

    def __init__(
        self,
        artifacts: ArtifactStore,
        local: LocalArtifactCache | None = None,
        on_use: Callable[[str], bool] = lambda key: True,
    ) -> None:
        self.artifacts = artifacts
        self.local = local or LocalArtifactCache()
        self.on_use = on_use
        self._recorded: dict[str, bool] = {}

    def get_or_create(self, key: str, create: Callable[[], bytes]) -> bytes:
        """The bytes under ``key``: local copy, else the shared store, else ``create()``."""

        def shared_or_create() -> bytes:
            try:
                with self.artifacts.open_reader(shared_artifact_id(key)) as reader:
                    return reader.read()
            except (ArtifactNotFound, ArtifactDamagedError) as exc:
                if isinstance(exc, ArtifactDamagedError):
                    logger.warning("%s; making it again", exc)
                content = create()
                self.artifacts.write(shared_artifact_id(key), io.BytesIO(content))
                return content

        if key not in self._recorded:
            self._recorded[key] = self.on_use(key)
        return self.local.get_or_create(key, shared_or_create if self._recorded[key] else create)
