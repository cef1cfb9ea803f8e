"""Early stopping: end training once the monitored metric stops improving."""

from __future__ import annotations

import math

from automl.train.metrics import Direction


class EarlyStopping:
    """Counts epochs without improvement of one metric.

    Args:
        patience: Epochs without a strictly better value after which to stop; 0 never stops.
        direction: Whether larger (``maximize``) or smaller (``minimize``) values are better.
    """

    def __init__(self, patience: int, direction: Direction) -> None:
        self.patience = patience
        self.sign = 1.0 if direction == "maximize" else -1.0
        self.best = -math.inf
        self.stale_epochs = 0

    def should_stop(self, value: float) -> bool:
        """Records one epoch's value; True once ``patience`` epochs passed without a better
        one. A value that is not finite never counts as better."""
        if math.isfinite(value) and self.sign * value > self.best:
            self.best = self.sign * value
            self.stale_epochs = 0
        else:
            self.stale_epochs += 1
        return self.patience > 0 and self.stale_epochs >= self.patience
