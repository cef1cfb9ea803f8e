"""The slot gate: trials share a device, and a trial that must run alone gets it alone."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from automl.worker.slots import DeviceGate, GateAbandoned


def _never() -> bool:
    return False


def test_shared_holders_run_side_by_side(tmp_path: Path) -> None:
    group = str(tmp_path / "gpu-0")
    first, second = DeviceGate(group, poll=0.01), DeviceGate(group, poll=0.01)
    deadline = time.monotonic() + 5
    with first.hold(False, _never), second.hold(False, lambda: time.monotonic() > deadline):
        pass  # both inside at once (GateAbandoned if the second had to wait)


def test_an_exclusive_trial_waits_for_running_ones_and_holds_off_new_ones(
    tmp_path: Path,
) -> None:
    group = str(tmp_path / "gpu-0")
    events: list[str] = []
    running = threading.Event()
    release_running = threading.Event()

    def ordinary(name: str, started: threading.Event | None = None) -> None:
        with DeviceGate(group, poll=0.01).hold(False, _never):
            events.append(f"{name} start")
            if started is not None:
                started.set()
                release_running.wait(10)
            events.append(f"{name} end")

    def alone() -> None:
        with DeviceGate(group, poll=0.01).hold(True, _never):
            events.append("alone start")
            time.sleep(0.2)
            events.append("alone end")

    first = threading.Thread(target=ordinary, args=("first", running))
    first.start()
    assert running.wait(10)
    exclusive = threading.Thread(target=alone)
    exclusive.start()
    time.sleep(0.2)  # the exclusive trial now waits for "first" and has closed the gate
    late = threading.Thread(target=ordinary, args=("late",))
    late.start()
    time.sleep(0.2)
    assert events == ["first start"]  # neither the exclusive nor the late one started
    release_running.set()
    for thread in (first, exclusive, late):
        thread.join(10)
    assert events == [
        "first start",
        "first end",
        "alone start",
        "alone end",
        "late start",
        "late end",
    ]


def test_a_wait_is_abandoned_when_the_worker_stops(tmp_path: Path) -> None:
    group = str(tmp_path / "cpu")
    holder = DeviceGate(group, poll=0.01)
    with holder.hold(False, _never):
        deadline = time.monotonic() + 0.2
        waiting = DeviceGate(group, poll=0.01)
        with (
            pytest.raises(GateAbandoned),
            waiting.hold(True, lambda: time.monotonic() > deadline),
        ):
            pytest.fail("ran while another trial held the device")
    # The abandoned wait left nothing locked.
    with DeviceGate(group, poll=0.01).hold(True, _never):
        pass


def test_without_a_group_every_trial_just_runs() -> None:
    gate = DeviceGate(None)
    with gate.hold(True, _never), gate.hold(True, _never):
        pass


def test_a_slot_returns_its_memory_before_a_trial_that_runs_alone_starts(tmp_path: Path) -> None:
    group = str(tmp_path / "gpu-0")
    events: list[str] = []
    inside = threading.Event()

    def ordinary() -> None:
        gate = DeviceGate(group, poll=0.01, release=lambda: events.append("released"))
        with pytest.raises(MemoryError), gate.hold(False, _never):
            inside.set()
            time.sleep(0.2)
            events.append("ran out")
            raise MemoryError  # the trial's own failure: the slot still releases

    def alone() -> None:
        with DeviceGate(group, poll=0.01).hold(True, _never):
            events.append("alone start")

    first = threading.Thread(target=ordinary)
    first.start()
    assert inside.wait(10)
    exclusive = threading.Thread(target=alone)
    exclusive.start()
    for thread in (first, exclusive):
        thread.join(10)
    assert events == ["ran out", "released", "alone start"]


def test_a_process_with_the_device_to_itself_releases_nothing_per_trial() -> None:
    released: list[int] = []
    with DeviceGate(None, release=lambda: released.append(1)).hold(False, _never):
        pass
    assert released == []


def test_a_release_that_fails_lets_the_trials_error_through(tmp_path: Path) -> None:
    """Found by review: after a CUDA fault ``empty_cache`` raises too, and its error
    replaced the fault's, which stops the worker."""

    def broken() -> None:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    gate = DeviceGate(str(tmp_path / "gpu-0"), poll=0.01, release=broken)
    with pytest.raises(KeyError), gate.hold(False, _never):
        raise KeyError("the trial's own error")
    with DeviceGate(str(tmp_path / "gpu-0"), poll=0.01).hold(True, _never):
        pass  # the device lock was let go
