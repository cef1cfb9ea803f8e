"""Worker scaling on PostgreSQL: 1 to 16 real worker processes, a fixed-duration objective.

Each worker is the real ``automl worker`` (claim, Optuna trial, per-epoch reports,
heartbeats, weights, tell, finish, settle) with training replaced by a sleep of
``--trial-seconds`` (``benchmarks/sleep_worker.py``), so the only thing that can keep N
workers from being N times as fast as one is the shared state: claims, trial writes and
settling, on one database (``--via direct``) or through ``automl proxy`` (``--via proxy``:
the workers get ``AUTOML_STORAGE=grpc://127.0.0.1:PORT`` and the proxy holds the
database connections).

For every worker count N (and every ``--via``, alternating) it starts N idle workers on
a fresh database, waits until all of them poll, submits one study of
``--trials-per-worker`` x N trials and waits for it to complete. Printed per run:

- trials/s: completed trials / (last trial's end - first trial's start), from Optuna's
  trial timestamps;
- efficiency: trials/s / (N x the 1-worker trials/s of the same ``--via``; 1.0 is perfect);
- steady efficiency: the same over the window in which every worker had work (from the
  ramp's end to the drain's start; each trial counts for the share of it that ran inside
  it). The span-based figure also charges the ends of a finite study: workers starting
  one after another as they notice it, and a last round in which some workers already
  found the budget spent (about one trial of idle time each, which ``--trials-per-worker``
  spreads over more trials); with one worker both figures are the same;
- claim p50/p99: the worker's claim call as the worker sees it (successful claims,
  timed in the worker process);
- gap p50/p99: per worker, from one trial's end (tell) to its next trial's start
  (settle + claim + creating the trial): the service's cost between two trials;
- in-trial: trial duration minus the sleep (reports, attributes, weights, tell);
- ramp: from the first trial's start until every worker has started one; drain: from
  the first worker's last trial end until the last trial's end (the span includes both);
- cpu/trial: CPU milliseconds the workers and the proxy spent per trial, from submit to
  the study's end (start-up excluded; PostgreSQL's own CPU not counted): on a machine
  with C cores, N workers cannot beat C / cpu/trial trials/s, whatever the design;
- proxy cores: the cores the proxy process used meanwhile (one Python process);
- load: the machine's 1-minute load average at the end of the run (it is shared).

    python benchmarks/bench_scaling.py [--workers 1 2 4 8 16] [--trial-seconds 0.5]
        [--trials-per-worker 8] [--epochs 2] [--via direct proxy] [--repeats 1]
        [--postgres postgresql://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from bench_store import postgres_database
from optuna.trial import TrialState

from automl.spec import validate_spec
from automl.store import Store, attrs, get_study, open_store, submit_study

HERE = Path(__file__).resolve().parent
SLEEP_WORKER = HERE / "sleep_worker.py"
TICKS = os.sysconf("SC_CLK_TCK")
STARTED = "started on"
"""What a worker logs once it is ready to claim."""


@dataclass
class Run:
    """What one run of N workers measured."""

    via: str
    workers: int
    trials: int
    span_s: float
    claims_ms: list[float]
    gaps_ms: list[float]
    in_trial_ms: list[float]
    ramp_s: float
    drain_s: float
    steady_trials: float
    load: float
    workers_cpu_s: float
    proxy_cpu_s: float

    @property
    def throughput(self) -> float:
        """Completed trials per second."""
        return self.trials / self.span_s

    @property
    def steady_throughput(self) -> float:
        """Trials per second while every worker had work (between ramp and drain)."""
        window = self.span_s - self.ramp_s - self.drain_s
        return self.steady_trials / window if window > 0 else float("nan")

    @property
    def cpu_per_trial_ms(self) -> float:
        """CPU the workers and the proxy spent per trial (PostgreSQL's own not counted)."""
        return (self.workers_cpu_s + self.proxy_cpu_s) / self.trials * 1000


def spec_for(n_trials: int, epochs: int, name: str) -> Any:
    """A study of ``n_trials`` with a small search space; the sleep ignores what it says."""
    return validate_spec(
        {
            "name": name,
            "dataset": {"source": "digits"},
            "budget": {"n_trials": n_trials, "max_failed": n_trials},
            "sampler": {"name": "random", "seed": 0},
            "pruner": {"name": "none"},
            "fixed": {"epochs": epochs, "batch_size": 64},
            "params": {
                "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
                "width": {"type": "int", "low": 8, "high": 32, "step": 8},
            },
        }
    )


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port_pair() -> int:
    """A port P such that P and P + 1 are both free (``automl proxy`` listens on both)."""
    for _ in range(100):
        port = free_port()
        if port >= 65535:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two adjacent free ports found")


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    """Waits until something accepts connections on ``port``.

    Raises:
        RuntimeError: If ``process`` exits first or ``timeout`` passes.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing listens on port {port} after {timeout:.0f} s")


def proxy_available() -> bool:
    """Whether this automl has an ``automl proxy`` command."""
    probe = subprocess.run(
        [sys.executable, "-m", "automl", "proxy", "--help"], capture_output=True, check=False
    )
    return probe.returncode == 0


def start_workers(
    n: int,
    storage: str,
    folder: Path,
    trial_seconds: float | None,
    extra_args: list[str] | None = None,
    extra_env: dict[str, str] | None = None,
) -> list[subprocess.Popen[bytes]]:
    """Starts ``n`` workers (``sleep_worker.py``); logs and claim logs go to ``folder``.

    Args:
        n: How many.
        storage: Their ``AUTOML_STORAGE``.
        folder: Working directory (artifacts, logs, claim logs).
        trial_seconds: The sleep per trial; None trains for real.
        extra_args: More ``automl worker`` arguments (e.g. ``--study 3``).
        extra_env: More environment variables.
    """
    env = {**os.environ, **(extra_env or {}), "AUTOML_STORAGE": storage}
    env.setdefault("AUTOML_ARTIFACTS_DIR", str(folder / "artifacts"))
    objective = (
        ["--real-training"] if trial_seconds is None else ["--trial-seconds", str(trial_seconds)]
    )
    processes = []
    for index in range(n):
        command = [
            sys.executable,
            str(SLEEP_WORKER),
            *objective,
            "--claim-log",
            str(folder / f"claims-{index}.jsonl"),
            "--",
            "--log-level",
            "INFO",
            "worker",
            "--device",
            "cpu",
            "--threads",
            "1",
            "--poll-interval",
            "0.2",
            *(extra_args or []),
        ]
        log = open(folder / f"worker-{index}.log", "wb")  # noqa: SIM115 (closed with the process)
        processes.append(
            subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=folder)
        )
        log.close()
    return processes


def wait_until_started(
    processes: list[subprocess.Popen[bytes]], folder: Path, timeout: float
) -> None:
    """Waits until every worker has logged that it is ready.

    Raises:
        RuntimeError: If a worker exits or ``timeout`` passes first.
    """
    deadline = time.monotonic() + timeout
    pending = set(range(len(processes)))
    while pending and time.monotonic() < deadline:
        for index in list(pending):
            if processes[index].poll() is not None:
                tail = (folder / f"worker-{index}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"worker {index} exited early:\n{tail}")
            if STARTED in (folder / f"worker-{index}.log").read_text(errors="replace"):
                pending.discard(index)
        time.sleep(0.2)
    if pending:
        raise RuntimeError(f"{len(pending)} workers not ready after {timeout:.0f} s")


def stop(processes: list[subprocess.Popen[bytes]], timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL whatever is still running after ``timeout``."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def proxy_server(database_url: str, folder: Path) -> Iterator[tuple[str, int]]:
    """``automl proxy`` in front of ``database_url``.

    Yields:
        The workers' ``grpc://`` URL and the proxy's process id.

    The proxy serves Optuna's storage on the port and automl's coordination (claims,
    heartbeats, settling) on the next one.
    """
    port = free_port_pair()
    env = {**os.environ, "AUTOML_STORAGE": database_url}
    log = open(folder / "proxy.log", "wb")  # noqa: SIM115 (closed with the process)
    process = subprocess.Popen(
        [sys.executable, "-m", "automl", "--log-level", "WARNING", "proxy", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=folder,
    )
    log.close()
    try:
        wait_for_port(port, process, timeout=60)
        wait_for_port(port + 1, process, timeout=60)
        yield f"grpc://127.0.0.1:{port}", process.pid
    finally:
        stop([process])


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by linear interpolation; NaN for no values."""
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[round(q * 1000) - 1]


def measure(store: Store, study_id: int, folder: Path, trial_seconds: float) -> dict[str, Any]:
    """Throughput and per-trial costs of a completed study, from its Optuna trials."""
    trials = [
        t
        for t in store.storage.get_all_trials(study_id, deepcopy=False)
        if t.state == TrialState.COMPLETE
    ]
    assert trials, "no trial completed"
    spans: list[tuple[float, float]] = []
    by_worker: dict[str, list[tuple[float, float]]] = {}
    for t in trials:
        assert t.datetime_start is not None and t.datetime_complete is not None
        span = (t.datetime_start.timestamp(), t.datetime_complete.timestamp())
        spans.append(span)
        by_worker.setdefault(str(t.user_attrs.get(attrs.WORKER)), []).append(span)
    gaps = []
    for own in by_worker.values():
        own.sort()
        gaps += [(b[0] - a[1]) * 1000 for a, b in itertools.pairwise(own)]
    claims = []
    for log in folder.glob("claims-*.jsonl"):
        for line in log.read_text().splitlines():
            entry = json.loads(line)
            if entry["got"]:
                claims.append(entry["s"] * 1000)
    first_start, last_end = min(start for start, _ in spans), max(end for _, end in spans)
    all_busy = max(own[0][0] for own in by_worker.values())
    first_idle = min(own[-1][1] for own in by_worker.values())
    return {
        "trials": len(trials),
        "span_s": last_end - first_start,
        "ramp_s": all_busy - first_start,
        "drain_s": last_end - first_idle,
        # Each trial counts for the share of it that ran inside the window.
        "steady_trials": sum(
            max(0.0, min(end, first_idle) - max(start, all_busy)) / (end - start)
            for start, end in spans
        ),
        "claims_ms": claims,
        "gaps_ms": gaps,
        "in_trial_ms": [(end - start - trial_seconds) * 1000 for start, end in spans],
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def run_once(args: argparse.Namespace, n: int, via: str) -> Run:
    """One study worked by ``n`` workers on a fresh database."""
    with (
        tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp,
        postgres_database(args.postgres) as url,
    ):
        folder = Path(tmp)
        store = open_store(url)  # creates the schema before the workers race to
        try:
            with proxy_server(url, folder) if via == "proxy" else _direct(url) as (storage, proxy):
                workers = start_workers(n, storage, folder, args.trial_seconds)
                try:
                    wait_until_started(workers, folder, timeout=args.start_timeout)
                    pids = [w.pid for w in workers] + ([proxy] if proxy else [])
                    before = {pid: cpu_seconds(pid) for pid in pids}
                    spec = spec_for(args.trials_per_worker * n, args.epochs, f"scaling-{via}-{n}")
                    study_id = submit_study(store, spec).id
                    deadline = time.monotonic() + args.run_timeout
                    while get_study(store, study_id).status.is_active:
                        if time.monotonic() > deadline:
                            raise RuntimeError(f"study not done after {args.run_timeout:.0f} s")
                        if any(w.poll() is not None for w in workers):
                            raise RuntimeError(f"a worker exited; see logs in {folder}")
                        time.sleep(0.2)
                    used = {pid: cpu_seconds(pid) - before[pid] for pid in pids}
                finally:
                    stop(workers)
            figures = measure(store, study_id, folder, args.trial_seconds)
        finally:
            store.close()
    return Run(
        via=via,
        workers=n,
        load=os.getloadavg()[0],
        workers_cpu_s=sum(used[w.pid] for w in workers),
        proxy_cpu_s=used.get(proxy, 0.0) if proxy else 0.0,
        **figures,
    )


@contextmanager
def _direct(url: str) -> Iterator[tuple[str, int | None]]:
    yield url, None


def main() -> None:
    """Runs every worker count for every ``--via`` and prints one table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--trial-seconds", type=float, default=0.5)
    parser.add_argument("--trials-per-worker", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2, help="reports per trial (default 2)")
    parser.add_argument("--via", nargs="+", choices=["direct", "proxy"], default=["direct"])
    parser.add_argument("--repeats", type=int, default=1, help="runs per point; median shown")
    parser.add_argument("--start-timeout", type=float, default=300)
    parser.add_argument("--run-timeout", type=float, default=600)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    vias = list(args.via)
    if "proxy" in vias and not proxy_available():
        print("skipping --via proxy: this automl has no `automl proxy` command yet", flush=True)
        vias.remove("proxy")
    if not vias:
        return

    header = (
        "via", "workers", "trials", "span s", "trials/s", "effic.", "claim p50", "claim p99",
        "gap p50", "gap p99", "in-trial p50", "ramp s", "drain s", "steady", "cpu/trial",
        "proxy cores", "load",
    )  # fmt: skip
    row = (
        "{:7} {:>7} {:>6} {:>7} {:>8} {:>6} {:>9} {:>9} {:>8} {:>8} {:>12} {:>6} {:>7} {:>6} "
        "{:>9} {:>11} {:>5}"
    )
    print(row.format(*header) + "   (ms for latencies)", flush=True)
    one: dict[str, float] = {}
    one_steady: dict[str, float] = {}
    results: dict[tuple[str, int], list[Run]] = {}
    for n in args.workers:
        for _ in range(args.repeats):
            for via in vias:  # alternating between the sides
                results.setdefault((via, n), []).append(run_once(args, n, via))
        for via in vias:
            runs = sorted(results[(via, n)], key=lambda r: r.throughput)
            run = runs[len(runs) // 2]
            if n == 1:
                one[via] = run.throughput
                one_steady[via] = run.steady_throughput
            efficiency = run.throughput / (n * one[via]) if via in one else float("nan")
            steady = run.steady_throughput / (n * one_steady[via]) if via in one else float("nan")
            print(
                row.format(
                    via,
                    n,
                    run.trials,
                    f"{run.span_s:.2f}",
                    f"{run.throughput:.2f}",
                    f"{efficiency:.2f}",
                    f"{percentile(run.claims_ms, 0.5):.1f}",
                    f"{percentile(run.claims_ms, 0.99):.1f}",
                    f"{percentile(run.gaps_ms, 0.5):.1f}",
                    f"{percentile(run.gaps_ms, 0.99):.1f}",
                    f"{percentile(run.in_trial_ms, 0.5):.1f}",
                    f"{run.ramp_s:.2f}",
                    f"{run.drain_s:.2f}",
                    f"{steady:.2f}",
                    f"{run.cpu_per_trial_ms:.0f}",
                    f"{run.proxy_cpu_s / run.span_s:.2f}" if via == "proxy" else "-",
                    f"{run.load:.1f}",
                ),
                flush=True,
            )
        if len(vias) == 2:
            direct, proxy = (
                statistics.median(r.throughput for r in results[(v, n)])
                for v in ("direct", "proxy")
            )
            print(f"{'':7} {n:>7}  proxy / direct throughput: {proxy / direct:.2f}", flush=True)
    if 16 in args.workers:
        for via in vias:
            if not one.get(via):
                print(f"goal ({via}): not computed: add --workers 1 (the efficiency's base)")
                continue
            runs = results[(via, 16)]
            efficiency = statistics.median(r.throughput for r in runs) / (16 * one[via])
            steady = statistics.median(r.steady_throughput for r in runs) / (16 * one_steady[via])
            verdict = "met" if steady >= 0.9 else "NOT met"
            print(
                f"goal ({via}): steady efficiency >= 0.9 at 16 workers: {steady:.2f} "
                f"({verdict}); over the whole span, ends included: {efficiency:.2f}"
            )


if __name__ == "__main__":
    main()
