"""Errors after which a worker process must stop: its CUDA context may be unusable."""

from __future__ import annotations

from automl.train.accel import is_device_fault, is_out_of_memory


class DeviceFaultError(RuntimeError):
    """A CUDA error (an illegal memory access, a device-side assert) left this process's
    device unusable: every later CUDA call would fail, and every later trial with it. The
    worker stops; its supervisor (``automl worker --gpus/--slots``, ``automl up``) or a
    container's restart policy starts a new process."""


def stops_the_worker(exc: BaseException) -> bool:
    """Whether ``exc``, once its trial or job has recorded it, must stop the worker."""
    return is_device_fault(exc) and not is_out_of_memory(exc)


def stop_after(exc: BaseException, worker_id: str, what: str) -> DeviceFaultError:
    """The error that stops worker ``worker_id`` after ``what`` (``trial 3 of study 1``)
    failed with ``exc``."""
    return DeviceFaultError(
        f"worker {worker_id} stops: {what} left its device unusable "
        f"({type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}); "
        "restart the worker (automl up and automl worker --slots/--gpus do) to go on"
    )
