"""The API's bundle builds: TorchScript traced in the API's process against in a child.

Each trace leaves its TorchScript classes in the tracing process for good. Until
``ChildTracer`` the API traced in its own process, so every bundle build (again whenever
more models were downloaded in turn than the bundle cache keeps) grew it. Both sides, in
one process, one after the other on the same model:

- ``here``: ``automl.delivery.export.export_torchscript``, as the API did;
- ``child``: ``automl.delivery.export.ChildTracer`` (the API's ``CHILD_TRACER``).

Printed per side: this process's resident memory growth over ``--traces`` traces (MB per
trace), and the median seconds per trace after the first (the child's first trace also
starts the child: printed apart). The ratio is the memory growth per trace, here over
child (above 1: the child keeps the API from growing).

    python benchmarks/bench_bundle_memory.py [--model resnet18] [--traces 12]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence

import torch

from automl.delivery.export import ChildTracer, ModelSource, export_torchscript
from automl.models import build_model

Tracer = Callable[[torch.nn.Module, Sequence[int]], bytes]


def in_child(tracer: ChildTracer, source: ModelSource) -> Tracer:
    """``tracer`` as the API calls it: the child rebuilds the model from ``source``."""
    return lambda model, shape: tracer(model, shape, source)


def resident_mb() -> float:
    """This process's resident memory (Linux ``/proc``), in MB."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def measure(trace: Tracer, model: torch.nn.Module, shape: tuple[int, ...], traces: int) -> dict:
    """Memory growth per trace (after a first, warming trace) and seconds per trace."""
    started = time.perf_counter()
    trace(model, shape)
    first_s = time.perf_counter() - started
    before = resident_mb()
    seconds = []
    for _ in range(traces):
        started = time.perf_counter()
        trace(model, shape)
        seconds.append(time.perf_counter() - started)
    return {
        "mb_per_trace": (resident_mb() - before) / traces,
        "first_s": first_s,
        "median_s": statistics.median(seconds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--traces", type=int, default=12)
    args = parser.parse_args()
    shape = (3, 32, 32)
    model = build_model(args.model, {}, shape, 10).eval()
    tracer = ChildTracer()
    try:
        source = ModelSource(build_model, (args.model, {}, shape, 10))
        child = measure(in_child(tracer, source), model, shape, args.traces)
    finally:
        tracer.close()
    here = measure(export_torchscript, model, shape, args.traces)
    for name, side in (("here", here), ("child", child)):
        print(
            f"{name:>5}: {side['mb_per_trace']:+.2f} MB per trace, first trace "
            f"{side['first_s']:.2f} s, then {side['median_s']:.2f} s (median)"
        )
    growth = here["mb_per_trace"] / max(child["mb_per_trace"], 0.01)
    print(f"memory growth per trace, here / child: {growth:.0f}x (floor 0.01 MB per trace)")


if __name__ == "__main__":
    main()
