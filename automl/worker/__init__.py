"""Workers: claim tickets from the store, train them, report, repeat."""

from automl.worker.coordinator import BufferedSqlCoordinator, Coordinator, SqlCoordinator
from automl.worker.device_faults import DeviceFaultError
from automl.worker.loop import InvalidDeviceError, Worker, WorkerOptions
from automl.worker.runner import ResultRejectedError, TrialContext, TrialRun, run_lease

__all__ = [
    "BufferedSqlCoordinator",
    "Coordinator",
    "DeviceFaultError",
    "InvalidDeviceError",
    "ResultRejectedError",
    "SqlCoordinator",
    "TrialContext",
    "TrialRun",
    "Worker",
    "WorkerOptions",
    "run_lease",
]
