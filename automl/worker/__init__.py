"""Workers: claim queued trials from the store, train them, report, repeat."""

from automl.worker.loop import InvalidDeviceError, Worker, WorkerOptions
from automl.worker.runner import Claim, run_trial

__all__ = ["Claim", "InvalidDeviceError", "Worker", "WorkerOptions", "run_trial"]
