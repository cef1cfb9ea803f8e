"""API reads under 32 concurrent clients while 4 workers write, on PostgreSQL and SQLite.

A real ``automl serve`` process on a free loopback port, a real study running: 4 real
``automl worker`` processes (``benchmarks/sleep_worker.py``: training replaced by a sleep
of ``--trial-seconds``, everything else the real worker path, so the study is written to
at a high rate without the trainer eating the 2 cores; ``--writer train`` trains for
real instead). The running study starts with ``--prefill`` finished trials and sits
among ``--studies`` completed studies of ``--prefill-other`` trials each, so listings
and aggregates have rows to read. On PostgreSQL the seeded tables are then analyzed
(``--no-analyze`` skips it), as autovacuum would do on a server that has it on.

``--clients`` asyncio tasks (httpx, keep-alive, one connection each), in one load-generator
process or split between ``--client-processes`` (one Python event loop driving 32 clients
costs about 1 to 2 ms of CPU per request and, on a busy machine, delays responses it has
already received: its own queue then shows in the latencies), cycle through

- ``GET /studies`` (first page, 50),
- ``GET /studies/{id}`` (the running study),
- ``GET /studies/{id}/trials`` (first page, 100, with params and learning curves)

for ``--duration`` seconds per phase (with ``--api-key``, sending a project API key, so
every request is authenticated and checked against the study's project). Two phases
alternate ``--rounds`` times, in swapped order each round: **writing** (the 4 workers run)
and **idle** (the same workers frozen with SIGSTOP, so the same server and data with no
writes: the baseline). Printed per backend and phase: requests/s, p50, p99 (ms), errors, the
server's and the load generator's CPU use (every process), all PostgreSQL processes' (every
database: the machine is shared) and the whole machine's busy cores (and its 1-minute load
average after each phase); per endpoint p50/p99; the ratio writing / idle; and the issue's
goal on PostgreSQL while writing: >= 200 req/s and p99 < 250 ms.

    python benchmarks/bench_api.py [--backends postgres sqlite] [--clients 32]
        [--duration 15] [--rounds 2] [--workers 4] [--trial-seconds 0.5]
        [--writer sleep|train] [--prefill 1000] [--studies 20] [--prefill-other 100]
        [--api-processes 1] [--client-processes 1] [--no-analyze] [--api-key]
        [--postgres postgresql://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import optuna
import sqlalchemy as sa
from bench_scaling import (
    cpu_seconds,
    free_port,
    percentile,
    spec_for,
    start_workers,
    stop,
    wait_for_port,
    wait_until_started,
)
from bench_store import populate, postgres_database

from automl.store import DEFAULT_PROJECT, Store, open_store, submit_study, tables
from automl.store.keys import create_key

GOAL_RPS = 200.0
GOAL_P99_MS = 250.0
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Phase:
    """What one phase of load measured."""

    seconds: float
    latencies_ms: list[list[float]]  # per endpoint
    errors: int
    reasons: dict[str, int]  # errors by kind: HTTP status or exception class
    server_cpu: float  # cores used by the API process(es)
    client_cpu: float  # cores used by the load generator process(es)
    postgres_cpu: float  # cores used by every postgres process (all databases)
    machine_cpu: float  # cores busy on the whole machine

    @property
    def all_ms(self) -> list[float]:
        """Every successful request's latency."""
        return [ms for per in self.latencies_ms for ms in per]

    @property
    def rps(self) -> float:
        """Successful requests per second."""
        return len(self.all_ms) / self.seconds


async def load(
    base: str, paths: list[str], clients: int, seconds: float, headers: dict[str, str]
) -> tuple[list[list[float]], dict[str, int]]:
    """``clients`` concurrent request loops over ``paths`` for ``seconds``.

    Returns:
        Latencies in ms per path (successful requests only) and the errors by kind.
    """
    latencies: list[list[float]] = [[] for _ in paths]
    reasons: dict[str, int] = {}
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client(offset: int, http: httpx.AsyncClient) -> None:
        index = offset
        while time.perf_counter() < deadline:
            which = index % len(paths)
            index += 1
            started = time.perf_counter()
            try:
                response = await http.get(paths[which])
                response.read()
                reason = None if response.status_code == 200 else f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                reason = type(exc).__name__
            if reason is None:
                latencies[which].append((time.perf_counter() - started) * 1000)
            else:
                reasons[reason] = reasons.get(reason, 0) + 1

    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60, headers=headers) as http:
        await asyncio.gather(*(client(i, http) for i in range(clients)))
    return latencies, reasons


def load_in_process(
    base: str, paths: list[str], clients: int, seconds: float, headers: dict[str, str]
) -> tuple[list[list[float]], dict[str, int], float]:
    """``load`` in a load-generator process; also returns the CPU seconds it used."""
    started = time.process_time()
    latencies, reasons = asyncio.run(load(base, paths, clients, seconds, headers))
    return latencies, reasons, time.process_time() - started


def measure_phase(
    base: str,
    paths: list[str],
    clients: int,
    seconds: float,
    server: int,
    generators: ProcessPoolExecutor | None = None,
    headers: dict[str, str] | None = None,
) -> Phase:
    """One phase of load, with the CPU the server and the load generator used meanwhile.

    Without ``generators`` this process runs every client; with them the clients are
    split between those processes (each an event loop of its own).
    """
    server_before = tree_cpu_seconds(server)
    postgres_before, machine_before = postgres_cpu_seconds(), machine_busy_seconds()
    started = time.perf_counter()
    headers = headers or {}
    if generators is None:
        latencies, reasons, client_seconds = load_in_process(base, paths, clients, seconds, headers)
    else:
        count = generators._max_workers  # type: ignore[attr-defined]
        shares = [clients // count + (i < clients % count) for i in range(count)]
        parts = [
            future.result()
            for future in [
                generators.submit(load_in_process, base, paths, share, seconds, headers)
                for share in shares
                if share
            ]
        ]
        latencies = [[ms for part in parts for ms in part[0][i]] for i in range(len(paths))]
        reasons = {}
        for _, part_reasons, _ in parts:
            for reason, n in part_reasons.items():
                reasons[reason] = reasons.get(reason, 0) + n
        client_seconds = sum(part[2] for part in parts)
    elapsed = time.perf_counter() - started
    return Phase(
        seconds=elapsed,
        latencies_ms=latencies,
        errors=sum(reasons.values()),
        reasons=reasons,
        server_cpu=(tree_cpu_seconds(server) - server_before) / elapsed,
        client_cpu=client_seconds / elapsed,
        postgres_cpu=(postgres_cpu_seconds() - postgres_before) / elapsed,
        machine_cpu=(machine_busy_seconds() - machine_before) / elapsed,
    )


def postgres_cpu_seconds() -> float:
    """CPU seconds of every live process named ``postgres`` (the server, all databases)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            text = stat.read_text()
            if text.split("(", 1)[1].startswith("postgres)"):
                fields = text.rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent not idle since boot (``/proc/stat``)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / TICKS


def merge(phases: list[Phase]) -> Phase:
    """The phases of one kind, pooled."""
    return Phase(
        seconds=sum(p.seconds for p in phases),
        latencies_ms=[
            [ms for p in phases for ms in p.latencies_ms[i]]
            for i in range(len(phases[0].latencies_ms))
        ],
        errors=sum(p.errors for p in phases),
        reasons={
            reason: sum(p.reasons.get(reason, 0) for p in phases)
            for reason in sorted({r for p in phases for r in p.reasons})
        },
        server_cpu=sum(p.server_cpu * p.seconds for p in phases) / sum(p.seconds for p in phases),
        client_cpu=sum(p.client_cpu * p.seconds for p in phases) / sum(p.seconds for p in phases),
        postgres_cpu=sum(p.postgres_cpu * p.seconds for p in phases)
        / sum(p.seconds for p in phases),
        machine_cpu=sum(p.machine_cpu * p.seconds for p in phases) / sum(p.seconds for p in phases),
    )


def seed(store: Store, args: argparse.Namespace) -> int:
    """Completed studies, then the study the workers will run; returns its id."""
    for index in range(args.studies):
        study_id = submit_study(store, spec_for(args.prefill_other, 2, f"done-{index}")).id
        populate(store, study_id, args.prefill_other)
        with store.write() as connection:
            connection.execute(
                tables.studies.update()
                .where(tables.studies.c.study_id == study_id)
                .values(status="completed", finished_at=time.time())
            )
    epochs = 3 if args.writer == "train" else 2
    running = submit_study(store, spec_for(args.prefill + 50_000, epochs, "running")).id
    populate(store, running, args.prefill)
    return running


def analyze(store: Store) -> None:
    """Gives PostgreSQL's planner the statistics of the freshly seeded tables.

    A server with autovacuum on (the default) gathers them by itself within a minute or
    so of such a load; this one may have it off (``SHOW autovacuum``), and without them
    the planner picks plans that cost the reads several times the PostgreSQL CPU.
    """
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("ANALYZE")


@contextmanager
def database(backend: str, postgres: str, folder: Path) -> Iterator[str]:
    """A fresh, empty database URL on ``backend``."""
    if backend == "sqlite":
        yield f"sqlite:///{folder / 'bench.db'}"
        return
    with postgres_database(postgres) as url:
        yield url


@contextmanager
def api_server(url: str, folder: Path, processes: int) -> Iterator[tuple[str, int]]:
    """The API on a free loopback port; yields its base URL and (main) process id.

    ``automl serve --workers N``: N processes on the port (``AUTOML_API_THREADS``,
    ``AUTOML_DB_POOL_SIZE`` and the other ``AUTOML_*`` settings come from the environment).
    """
    port = free_port()
    env = {**os.environ, "AUTOML_STORAGE": url, "AUTOML_ARTIFACTS_DIR": str(folder / "art")}
    command = [sys.executable, "-m", "automl", "--log-level", "WARNING", "serve"]
    command += ["--workers", str(processes)]
    log = open(folder / "serve.log", "wb")  # noqa: SIM115 (closed with the process)
    process = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=folder,
    )
    log.close()
    try:
        wait_for_port(port, process, timeout=120)
        base = f"http://127.0.0.1:{port}"
        httpx.get(f"{base}/health", timeout=30).raise_for_status()
        time.sleep(2 if processes > 1 else 0)  # every worker process up
        yield base, process.pid
    finally:
        stop([process])


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds of process ``root`` and all its live descendants."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        tree.update(children)
        frontier += children
    total = 0.0
    for pid in tree:
        with contextlib.suppress(OSError):  # exited meanwhile
            total += cpu_seconds(pid)
    return total


def run_backend(
    args: argparse.Namespace, backend: str, generators: ProcessPoolExecutor | None
) -> dict[str, Phase]:
    """Both phases, alternating, on one backend."""
    with (
        tempfile.TemporaryDirectory(prefix="bench-api-") as tmp,
        database(backend, args.postgres, Path(tmp)) as url,
    ):
        folder = Path(tmp)
        store = open_store(url, artifacts_dir=folder / "art")
        try:
            study_id = seed(store, args)
            # A project key: every request then pays the key check and the study's
            # project check (an admin key skips the latter).
            headers = (
                {"Authorization": f"Bearer {create_key(store, DEFAULT_PROJECT)[1]}"}
                if args.api_key
                else {}
            )
            if backend == "postgres" and not args.no_analyze:
                analyze(store)
        finally:
            store.close()
        paths = ["/studies", f"/studies/{study_id}", f"/studies/{study_id}/trials"]
        with api_server(url, folder, args.api_processes) as (base, server):
            trial_seconds = None if args.writer == "train" else args.trial_seconds
            workers = start_workers(
                args.workers, url, folder, trial_seconds, extra_args=["--study", str(study_id)]
            )
            try:
                wait_until_started(workers, folder, timeout=300)
                time.sleep(2)  # the first claims and trials
                measure_phase(base, paths, args.clients, 2, server, generators, headers)
                phases: dict[str, list[Phase]] = {"writing": [], "idle": []}
                for round_ in range(args.rounds):
                    order = ["writing", "idle"] if round_ % 2 == 0 else ["idle", "writing"]
                    for kind in order:
                        sig = signal.SIGCONT if kind == "writing" else signal.SIGSTOP
                        for worker in workers:
                            worker.send_signal(sig)
                        time.sleep(0.5)
                        phase = measure_phase(
                            base, paths, args.clients, args.duration, server, generators, headers
                        )
                        phases[kind].append(phase)
                        print(
                            f"  {backend} round {round_ + 1} {kind:7}: {phase.rps:7.1f} req/s "
                            f"p50 {percentile(phase.all_ms, 0.5):7.1f} ms "
                            f"p99 {percentile(phase.all_ms, 0.99):7.1f} ms "
                            f"(load average {os.getloadavg()[0]:.1f})",
                            flush=True,
                        )
                for worker in workers:
                    worker.send_signal(signal.SIGCONT)
                if any(worker.poll() is not None for worker in workers):
                    raise RuntimeError(f"a worker exited during the run; logs in {folder}")
            finally:
                for worker in workers:
                    if worker.poll() is None:
                        worker.send_signal(signal.SIGCONT)
                stop(workers)
        trials = count_trials(url, study_id)
        print(f"  {backend}: the running study has {trials} trials at the end", flush=True)
    return {kind: merge(runs) for kind, runs in phases.items()}


def count_trials(url: str, study_id: int) -> int:
    """The number of Optuna trials of ``study_id``."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            count = connection.exec_driver_sql(
                f"SELECT count(*) FROM trials WHERE study_id = {int(study_id)}"
            ).scalar()
    finally:
        engine.dispose()
    return int(count or 0)


def main() -> None:
    """Runs every backend and prints one table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=["postgres", "sqlite"])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, default=15, help="seconds per phase")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--trial-seconds", type=float, default=0.5)
    parser.add_argument("--writer", choices=["sleep", "train"], default="sleep")
    parser.add_argument("--prefill", type=int, default=1000)
    parser.add_argument("--studies", type=int, default=20)
    parser.add_argument("--prefill-other", type=int, default=100)
    parser.add_argument("--api-processes", type=int, default=1, help="automl serve --workers N")
    parser.add_argument(
        "--no-analyze",
        action="store_true",
        help="PostgreSQL: skip ANALYZE after seeding (plans from no statistics)",
    )
    parser.add_argument(
        "--client-processes",
        type=int,
        default=1,
        help="load-generator processes sharing the clients (1: all in this one)",
    )
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument(
        "--api-key", action="store_true", help="clients send a project API key (auth on)"
    )
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    endpoints = ["/studies", "/studies/{id}", "/studies/{id}/trials"]

    generators = None
    if args.client_processes > 1:
        context = multiprocessing.get_context("spawn")
        generators = ProcessPoolExecutor(args.client_processes, mp_context=context)
        list(generators.map(time.sleep, [0] * args.client_processes))  # started before use
    try:
        results = {backend: run_backend(args, backend, generators) for backend in args.backends}
    finally:
        if generators is not None:
            generators.shutdown()

    print(
        f"\n{args.clients} clients in {args.client_processes} load-generator process(es), "
        f"{args.api_processes} API process(es), "
        f"{args.workers} workers ({args.writer}), {args.rounds} x {args.duration:g} s per phase"
    )
    header = (
        "backend", "phase", "req/s", "p50 ms", "p99 ms", "errors", "server", "client",
        "postgres", "machine",
    )  # fmt: skip
    row = "{:9} {:8} {:>8} {:>8} {:>8} {:>7} {:>7} {:>7} {:>8} {:>8}"
    print(row.format(*header) + f"   (CPU in cores, of {os.cpu_count()})")
    for backend, phases in results.items():
        for kind, phase in phases.items():
            print(
                row.format(
                    backend,
                    kind,
                    f"{phase.rps:.1f}",
                    f"{percentile(phase.all_ms, 0.5):.1f}",
                    f"{percentile(phase.all_ms, 0.99):.1f}",
                    phase.errors,
                    f"{phase.server_cpu:.2f}",
                    f"{phase.client_cpu:.2f}",
                    f"{phase.postgres_cpu:.2f}",
                    f"{phase.machine_cpu:.2f}",
                )
            )
        writing, idle = phases["writing"], phases["idle"]
        print(f"{'':9} writing / idle req/s: {writing.rps / idle.rps:.2f}")
        for kind, phase in phases.items():
            if phase.reasons:
                print(f"{'':9} {kind} errors: {phase.reasons}")
    print("\nper endpoint, p50 / p99 ms")
    for backend, phases in results.items():
        for kind, phase in phases.items():
            cells = "   ".join(
                f"{name} {percentile(ms, 0.5):.1f} / {percentile(ms, 0.99):.1f}"
                for name, ms in zip(endpoints, phase.latencies_ms, strict=True)
            )
            print(f"{backend:9} {kind:8} {cells}")
    if "postgres" in results:
        writing = results["postgres"]["writing"]
        p99 = percentile(writing.all_ms, 0.99)
        met = writing.rps >= GOAL_RPS and p99 < GOAL_P99_MS
        print(
            f"\ngoal (PostgreSQL, writing): >= {GOAL_RPS:g} req/s and p99 < {GOAL_P99_MS:g} ms: "
            f"{writing.rps:.1f} req/s, p99 {p99:.1f} ms ({'met' if met else 'NOT met'})"
        )


if __name__ == "__main__":
    main()
