"""The error every dataset problem raises."""

from __future__ import annotations


class DatasetError(ValueError):
    """A dataset cannot be used: bad path, missing files, a corrupt image.

    The message is one line and names the offending option or file. Raised inside an
    options model's validator it becomes a 422 naming the field (``dataset.options.path``);
    raised while loading it fails the trial with this message.
    """
