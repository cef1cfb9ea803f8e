"""Scoring a trial's weights sees the classes the trial trained on.

Test-split scoring and refits load the study's dataset again, maybe long after the trial
trained. Class indices follow the sorted class names, so a class renamed, added or
removed since then would give every label another meaning (a renamed class once scored
0). The trial's ``automl.classes`` attribute records its classes in index order.

Only the classes are compared: fingerprints include file times, which differ between
copies of the same data on different machines.
"""

from __future__ import annotations

from optuna.trial import FrozenTrial

from automl.data import ImageData
from automl.store import attrs


class DataChangedError(Exception):
    """The data is not what a trial trained on."""


def require_trained_classes(trial: FrozenTrial, data: ImageData, source: str, doing: str) -> None:
    """Checks that ``data`` has the classes ``trial`` trained on, in the same order.

    A trial that recorded no classes passes.

    Args:
        trial: The trained trial.
        data: The dataset as loaded now.
        source: The dataset's registered name, for the message.
        doing: What was about to happen, for the message (``"test metrics not computed"``).

    Raises:
        DataChangedError: If the classes differ.
    """
    trained = trial.user_attrs.get(attrs.CLASSES)
    if trained is None or list(trained) == list(data.classes):
        return
    raise DataChangedError(
        f"the classes of dataset {source!r} changed since trial {trial.number} trained "
        f"({_names(trained)} then, {_names(data.classes)} now): {doing}; restore the class "
        "folders or submit a new study"
    )


def _names(classes: list[str] | tuple[str, ...]) -> str:
    shown = ", ".join(str(name) for name in classes[:5])
    return shown + (", ..." if len(classes) > 5 else "")
