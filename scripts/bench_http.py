"""HTTP service benchmark: set/get through the service, beside the embedded store and a bare route.

    .venv/bin/python scripts/bench_http.py [--seconds 5] [--concurrency 64]
        [--stall-only | --no-stall]

Starts the service (uvicorn, one worker, SQLite with durability "full") in a subprocess on a free
loopback port, with one extra operation that does nothing (`PUT /bench/noop`: reads the body,
answers `{}`, no token) on the same app, router and server. Then, in this process, 64 concurrent
client tasks (aiohttp through `eventstore.client`) drive each workload for a fixed time; the
embedded store runs the same set/get workload in process. Prints requests/s, p50 and p99
latency, each row's ratio to the bare route, and the server's CPU per set over per bare request.

Then the stall line: while maximal batches (MAX_BATCH_KEYS keys each) are written and a scope of
400,000 keys is listed page by page, another process polls `/healthz` one request after the
other; the longest of those waits is how long any request held up the service (target < 50 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_http_stall import wait_until_up  # noqa: E402 (beside this script)

from eventstore import open_store  # noqa: E402
from eventstore.client import connect  # noqa: E402
from eventstore.service.auth import make_token  # noqa: E402

SECRET = b"bench-secret-0123456789abcdef"


def bare_operation() -> Any:
    """`PUT /bench/noop`: routed and wrapped as the API's operations are (the same router, the
    same per-request metrics, the same JSON answer), with no token to check and nothing to do:
    the least a request costs this server."""
    from starlette.responses import Response

    from eventstore.service.operation import Call, Operation
    from eventstore.service.responses import json_response

    async def noop(call: Call) -> Response:
        await call.raw_body()
        return json_response({})

    return Operation("PUT", "/bench/noop", "bench_noop", "Nothing", noop, "bench")


def serve(db: str, port: int, profile: str | None = None, extra: Sequence[Any] = ()) -> None:
    """The server side: the service app plus a route that does nothing and the `extra`
    operations (and, with `profile`, a profiler: see `bench_http_profile`)."""
    if profile:
        from bench_http_profile import profile_on_signals

        profile_on_signals(profile)
    from eventstore.service.app import create_app
    from eventstore.service.app import serve as run

    app = create_app(db, secret=SECRET, extra_operations=[bare_operation(), *extra])
    run(app, "127.0.0.1", port, log_level="warning")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (Linux), or 0 where /proc is missing."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Sample:
    """What one workload did in one or more timed runs."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.latencies: list[float] = []
        self.elapsed = 0.0
        self.client_cpu = 0.0
        self.server_cpu = 0.0

    def row(self) -> dict[str, float | str]:
        latencies = sorted(self.latencies)
        n = len(latencies)
        return {
            "name": self.name,
            "requests": n,
            "rps": n / self.elapsed,
            "p50": statistics.median(latencies) * 1000,
            "p99": latencies[int(n * 0.99) - 1] * 1000,
            # CPU per request in microseconds: the client's (this process) and the server's.
            "client_us": self.client_cpu / n * 1e6,
            "server_us": self.server_cpu / n * 1e6,
        }


async def drive(
    sample: Sample,
    concurrency: int,
    seconds: float,
    op: Callable[[int, int], Awaitable[object]],
    server_pid: int | None = None,
) -> None:
    stop = time.perf_counter() + seconds
    latencies = sample.latencies

    async def worker(w: int) -> None:
        n = 0
        while time.perf_counter() < stop:
            started = time.perf_counter()
            await op(w, n)
            latencies.append(time.perf_counter() - started)
            n += 1

    began = time.perf_counter()
    cpu = (cpu_seconds(server_pid) if server_pid else 0.0, time.process_time())
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    sample.elapsed += time.perf_counter() - began
    sample.server_cpu += (cpu_seconds(server_pid) - cpu[0]) if server_pid else 0.0
    sample.client_cpu += time.process_time() - cpu[1]


async def rounds(
    workloads: list[tuple[Sample, Callable[[int, int], Awaitable[object]]]],
    concurrency: int,
    seconds: float,
    count: int,
    server_pid: int | None = None,
    profile: Sample | None = None,
) -> None:
    """Run the workloads in turn, `count` times each, so a change in the machine's load
    (it is shared) falls on all of them alike rather than on whichever ran at the time.
    The server profiles `profile`'s runs (see `serve`)."""
    for _ in range(count):
        for sample, op in workloads:
            profiled = server_pid is not None and sample is profile
            if profiled:
                os.kill(server_pid, signal.SIGUSR1)
            await drive(sample, concurrency, seconds / count, op, server_pid)
            if profiled:
                os.kill(server_pid, signal.SIGUSR2)


async def bench(
    seconds: float,
    concurrency: int,
    count: int,
    embedded_url: str,
    server: subprocess.Popen[bytes],
    base: str,
    profile: tuple[str, Path] | None = None,
) -> None:
    pid = server.pid
    backend = "SQLite durability=full" if embedded_url.startswith("sqlite") else "PostgreSQL"
    try:
        async with aiohttp.ClientSession() as probe:
            await wait_until_up(probe, base)
        token = make_token(SECRET, "admin")
        rows = []
        async with connect(base, token=token) as remote:
            stores = [remote.task_store(f"bench{w}", "run", "task") for w in range(concurrency)]
            session = remote._session
            body = b'{"value":{"offset":1200,"rows":5}}'

            async def noop(w: int, n: int) -> None:
                async with session.put(base + "/bench/noop", data=body) as response:
                    await response.read()
                    assert response.status == 200

            async def service_set(w: int, n: int) -> None:
                await stores[w].set(f"k{n % 100}", {"offset": n, "rows": 5})

            async def service_get(w: int, n: int) -> None:
                await stores[w].get(f"k{n % 100}")

            warm = min(1.0, seconds)
            await drive(Sample("warm-up"), concurrency, warm, noop)
            await drive(Sample("warm-up"), concurrency, warm, service_set)
            http = [
                (Sample("bare route (PUT, no-op)"), noop),
                (Sample("service set"), service_set),
                (Sample("service get"), service_get),
            ]
            profiled = {"bare": 0, "set": 1, "get": 2}[profile[0]] if profile else None
            await rounds(
                http,
                concurrency,
                seconds,
                count,
                pid,
                None if profiled is None else http[profiled][0],
            )
            rows += [sample.row() for sample, _ in http]
    finally:
        server.terminate()
        await asyncio.to_thread(server.wait, 60)

    async with open_store(embedded_url) as store:
        embedded = [store.task_store(f"bench{w}", "run", "task") for w in range(concurrency)]

        async def embedded_set(w: int, n: int) -> None:
            await embedded[w].set(f"k{n % 100}", {"offset": n, "rows": 5})

        async def embedded_get(w: int, n: int) -> None:
            await embedded[w].get(f"k{n % 100}")

        embedded_rows = [
            (Sample("embedded set"), embedded_set),
            (Sample("embedded get"), embedded_get),
        ]
        await rounds(embedded_rows, concurrency, seconds, count)
        rows += [sample.row() for sample, _ in embedded_rows]

    bare = float(rows[0]["rps"])
    print(
        f"{concurrency} concurrent tasks, {seconds:g} s per workload, {backend}, "
        f"uvicorn 1 worker, {os.cpu_count()} CPUs"
    )
    print(
        f"{'workload':<26}{'requests':>10}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'vs bare':>9}"
        f"{'client CPU':>12}{'server CPU':>12}"
    )
    for row in rows:
        server_us = f"{row['server_us']:>9.0f} us" if row["server_us"] else f"{'-':>12}"
        print(
            f"{row['name']:<26}{row['requests']:>10}{row['rps']:>10.0f}{row['p50']:>9.2f}"
            f"{row['p99']:>9.2f}{float(row['rps']) / bare:>8.0%} "
            f"{row['client_us']:>9.0f} us{server_us}"
        )
    cpu = [float(r["client_us"]) + float(r["server_us"]) for r in rows[:2]]
    print(
        f"CPU per request, client + server: bare {cpu[0]:.0f} us, service set {cpu[1]:.0f} us: "
        f"where CPU is the limit, set runs at {cpu[0] / cpu[1]:.0%} of the bare route"
    )
    service_set_row = rows[1]
    ok = float(service_set_row["rps"]) >= 0.5 * bare and float(service_set_row["p99"]) < 25
    print(f"target (service set >= 50% of bare req/s, p99 < 25 ms): {'met' if ok else 'NOT met'}")
    server_ratio = float(service_set_row["server_us"]) / float(rows[0]["server_us"])
    print(
        f"server CPU per set / per bare request: {server_ratio:.2f} "
        f"(target <= 1.5: {'met' if server_ratio <= 1.5 else 'NOT met'})"
    )
    if profile:
        name, stats_file = profile
        index = {"bare": 0, "set": 1, "get": 2}[name]
        from bench_http_profile import print_profile

        print_profile(stats_file, str(rows[index]["name"]), int(rows[index]["requests"]))


async def drop_schemas(url: str, schemas: list[str]) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        for schema in schemas:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved runs per workload")
    parser.add_argument("--keep", action="store_true", help="keep the databases")
    parser.add_argument(
        "--stall-only", action="store_true", help="only the stall line (no throughput rows)"
    )
    parser.add_argument(
        "--db",
        metavar="POSTGRESQL_URL",
        help="run on PostgreSQL (fresh schemas in this database) instead of SQLite files",
    )
    parser.add_argument(
        "--no-stall", action="store_true", help="only the throughput rows (no stall line)"
    )
    parser.add_argument(
        "--profile",
        choices=["bare", "set", "get"],
        help="profile the server (cProfile) during this workload and print its top functions "
        "(that workload's row then counts the profiler's cost too)",
    )
    parser.add_argument("--serve", metavar="DB_URL", help=argparse.SUPPRESS)
    parser.add_argument("--stats", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.stats)
        return
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    workdir = Path(tempfile.mkdtemp(prefix="tasktrail-bench-"))
    schemas: list[str] = []
    port = free_port()
    if args.db:
        # Two fresh schemas on the given PostgreSQL database, dropped afterwards.
        run = uuid.uuid4().hex[:8]
        schemas = [f"tasktrail_bench_{run}_service", f"tasktrail_bench_{run}_embedded"]
        separator = "&" if "?" in args.db else "?"
        db, embedded_url = (f"{args.db}{separator}schema={schema}" for schema in schemas)
    else:
        db = f"sqlite:///{workdir / 'service.db'}"
        embedded_url = f"sqlite:///{workdir / 'embedded.db'}"
    try:
        if not args.stall_only:
            stats = workdir / "server.prof"
            profiling = ["--stats", str(stats)] if args.profile else []
            server = subprocess.Popen(
                [sys.executable, __file__, "--serve", db, "--port", str(port), *profiling]
            )
            try:
                asyncio.run(
                    bench(
                        args.seconds,
                        args.concurrency,
                        args.rounds,
                        embedded_url,
                        server,
                        f"http://127.0.0.1:{port}",
                        (args.profile, stats) if args.profile else None,
                    )
                )
            finally:
                server.kill()
                server.wait()
        if args.no_stall:
            return
        # The stall line, on a fresh database (the embedded one: the throughput rows are done).
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", embedded_url, "--port", str(port)]
        )
        try:
            from bench_http_stall import stall

            asyncio.run(stall(f"http://127.0.0.1:{port}", SECRET))
        finally:
            server.terminate()
            server.wait()
    finally:
        if not args.keep:
            shutil.rmtree(workdir)
            if schemas:
                asyncio.run(drop_schemas(args.db, schemas))


if __name__ == "__main__":
    main()
