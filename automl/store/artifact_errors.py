"""The artifact stores' errors: light, so that a command that only reads the store's
tables can name them without importing the stores (and torch)."""

from __future__ import annotations


class WeightsNotFoundError(LookupError):
    """The trial kept no weights (it failed, was pruned, or the artifact is gone)."""


class ArtifactUnreadableError(RuntimeError):
    """An artifact is there but cannot be read (its file's permissions, a folder by its
    name): the operator's to fix, not the caller's."""


class ArtifactDamagedError(ArtifactUnreadableError):
    """An artifact's bytes differ from those written: its SHA-256 is not the one recorded
    beside it (a disk or a network file system changed them). Read again, they stay wrong;
    whoever made them can make them again (a checkpoint, a shared generator), and weights
    are lost."""


class ArtifactsFolderWriteError(OSError):
    """The artifacts folder refused a write for its path (``FOLDER_REFUSALS``: read-only,
    gone, a file by its name), which no later write in it would get past."""


class ArtifactStoreError(ValueError):
    """The configured artifact store cannot be used (unknown kind, missing bucket)."""


class UnusableArtifactsFolderError(ArtifactStoreError):
    """The ``folder`` store's folder cannot be created where the setting puts it."""
