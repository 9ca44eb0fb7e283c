"""The service's work per request counted rather than timed: function calls and instructions.

    .venv/bin/python scripts/bench_http_cpu.py [--db sqlite|memory] [--requests 3200]
        [--callgrind] [--top set]
    .venv/bin/python scripts/bench_http_cpu.py --server [--db sqlite|memory] [--requests 1280]

Wall-clock CPU on a shared machine moves by tens of percent from run to run; these counts do
not. In this process, without sockets or uvicorn, 64 concurrent tasks call the service's ASGI
app as uvicorn calls it (the scope, the headers and the body `eventstore.client` sends, an
admin token) for three workloads: bench_http's bare route, a set, and the same set straight on
the store's accessor (what the store itself does for it). The service's own work per set is
set - bare - store. Prints Python function calls per request (cProfile: the same on every run,
but for a group commit's batch sizes) and with `--callgrind` instructions per request (the
script runs itself under valgrind's callgrind, which dumps its counts between the workloads).

With `--server`, the whole server instead: bench_http's (uvicorn, one worker) runs under
callgrind, and this process drives it over loopback with the client as bench_http does, 64
requests at once, for bare, set and get; a request to `PUT /bench/mark` between two workloads
makes the server dump its counts. Its instructions per set over per bare request are bench_http's
"server CPU per set / per bare request" without the kernel's share, and without the noise.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import pstats
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_http import SECRET, bare_operation  # noqa: E402 (beside this script)

from eventstore.client.transport import new_idempotency_id  # noqa: E402
from eventstore.service.app import _tune_gc, create_app  # noqa: E402
from eventstore.service.auth import make_token  # noqa: E402

WORKLOADS = ("bare", "set", "store")
CONCURRENCY = 64
# callgrind dumps its counts when the program enters this libc function, which nothing else
# here calls: `os.getpgid` marks the line between two workloads.
_MARK = "getpgid"


def _send_headers(token: str, length: int) -> list[tuple[bytes, bytes]]:
    """A set's headers as aiohttp sends them (uvicorn hands them on lower-cased)."""
    return [
        (b"host", b"127.0.0.1:8750"),
        (b"authorization", f"Bearer {token}".encode()),
        (b"idempotency-key", new_idempotency_id().encode()),
        (b"content-type", b"application/json"),
        (b"accept", b"*/*"),
        (b"accept-encoding", b"gzip, deflate"),
        (b"user-agent", b"Python/3.11 aiohttp/3.14.5"),
        (b"content-length", str(length).encode()),
    ]


def _scope(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    """An HTTP request's ASGI scope as uvicorn's httptools protocol makes it."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8750),
        "client": ("127.0.0.1", 40000),
        "scheme": "http",
        "method": method,
        "root_path": "",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": headers,
        "state": {},
    }


Op = Callable[[int, int], Awaitable[None]]


async def _drive(op: Op, requests: int) -> None:
    """`requests` calls of `op`, made by CONCURRENCY tasks at once (as bench_http's clients)."""
    each = requests // CONCURRENCY

    async def worker(w: int) -> None:
        for n in range(each):
            await op(w, n)

    await asyncio.gather(*(worker(w) for w in range(CONCURRENCY)))


async def measure(url: str, requests: int, between: Callable[[str], None]) -> None:
    """Warm every workload up, then run each, calling `between` before each and at the end."""
    app = create_app(url, secret=SECRET, extra_operations=[bare_operation()])
    token = make_token(SECRET, "admin")
    statuses: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def call(method: str, path: str, body: bytes) -> None:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        await app(_scope(method, path, _send_headers(token, len(body))), receive, send)

    async def bare(w: int, n: int) -> None:
        await call("PUT", "/bench/noop", b'{"value":{"offset":1200,"rows":5}}')

    async def service_set(w: int, n: int) -> None:
        body = b'{"value":{"offset":%d,"rows":5},"retention":"default"}' % n
        await call("PUT", f"/api/v1/tasks/bench{w}/run/task/-1/store/k{n % 100}", body)

    async with app.router.lifespan_context(app):
        store = app.state.tasktrail.store
        # As the service's accessor for an admin token: actor api:admin, no try.
        tasks = [store.task_store(f"bench{w}", "run", "task", actor="api:admin") for w in range(64)]

        async def store_set(w: int, n: int) -> None:
            await tasks[w].set(
                f"k{n % 100}", {"offset": n, "rows": 5}, idempotency_id=new_idempotency_id()
            )

        ops: dict[str, Op] = {"bare": bare, "set": service_set, "store": store_set}
        for name in WORKLOADS:  # warm: every scope written, every cache filled
            await _drive(ops[name], CONCURRENCY * 4)
        _tune_gc()  # as `serve` does once the app is loaded
        for name in WORKLOADS:
            between(name)
            await _drive(ops[name], requests)
        between("end")
    if set(statuses) != {200}:
        raise SystemExit(f"the service answered {sorted(set(statuses))}, not only 200")


def _event_loop() -> Any:
    try:
        import uvloop  # what uvicorn runs the service on when it is installed

        return uvloop.new_event_loop
    except ImportError:
        return asyncio.new_event_loop


def _run(url: str, requests: int, between: Callable[[str], None]) -> None:
    with asyncio.Runner(loop_factory=_event_loop()) as runner:
        runner.run(measure(url, requests, between))


def count_calls(url: str, requests: int, top: str | None) -> dict[str, dict[str, float]]:
    """Per workload: Python function calls and CPU microseconds per request."""
    profiles: dict[str, cProfile.Profile] = {}
    cpu: dict[str, float] = {}
    current: list[str] = []

    def between(name: str) -> None:
        if current:
            profiles[current[0]].disable()
            cpu[current[0]] = time.process_time() - cpu[current[0]]
            current.clear()
        if name != "end":
            current.append(name)
            profiles[name] = cProfile.Profile()
            cpu[name] = time.process_time()
            profiles[name].enable()

    _run(url, requests, between)
    rows = {}
    for name, profile in profiles.items():
        stats: dict[Any, tuple[Any, ...]] = pstats.Stats(profile).stats  # type: ignore[attr-defined]
        rows[name] = {
            "calls": sum(entry[1] for entry in stats.values()) / requests,
            "cpu_us": cpu[name] / requests * 1e6,
        }
        if name == top:
            _print_top(stats, requests)
    return rows


def _print_top(stats: dict[Any, tuple[Any, ...]], requests: int, top: int = 40) -> None:
    print(f"{'calls/req':>10}{'own':>7}  function")
    total = sum(entry[2] for entry in stats.values())
    for (file, line, function), entry in sorted(stats.items(), key=lambda item: -item[1][2])[:top]:
        where = f"{Path(file).name}:{line}" if line else "~"
        print(f"{entry[1] / requests:>10.2f}{entry[2] / total:>7.1%}  {function} ({where})")


def _under_callgrind(out: Path, *args: str) -> list[str]:
    """The command that runs this script with `args` under callgrind, dumping at each mark."""
    return [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        f"--dump-before={_MARK}",
        sys.executable,
        __file__,
        *args,
    ]


def count_instructions(db: str, requests: int) -> dict[str, float]:
    """Per workload: instructions per request, this script run under callgrind."""
    if shutil.which("valgrind") is None:
        raise SystemExit("--callgrind needs valgrind")
    with tempfile.TemporaryDirectory(prefix="tasktrail-callgrind-") as work:
        out = Path(work) / "callgrind.out"
        subprocess.run(
            _under_callgrind(out, "--db", db, "--requests", str(requests), "--marked-run", work),
            check=True,
            stderr=subprocess.DEVNULL,
        )
        # Dump 1 is the start and the warm-up, then one per workload in order.
        counts = [_total(Path(f"{out}.{i}")) for i in range(2, 2 + len(WORKLOADS))]
    return {name: n / requests for name, n in zip(WORKLOADS, counts, strict=True)}


def mark_operation() -> Any:
    """`PUT /bench/mark`: a line between two workloads in the server's callgrind counts."""
    from starlette.responses import Response

    from eventstore.service.operation import Call, Operation
    from eventstore.service.responses import json_response

    async def mark(call: Call) -> Response:
        os.getpgid(0)
        return json_response({})

    return Operation("PUT", "/bench/mark", "bench_mark", "Mark", mark, "bench")


SERVER_WORKLOADS = ("bare", "set", "get")


async def _drive_server(base: str, requests: int) -> None:
    import aiohttp

    from eventstore.client import connect

    async with aiohttp.ClientSession() as session:
        deadline = time.monotonic() + 600  # callgrind takes a minute or two to start Python
        while not await _answers(session, base + "/healthz"):
            if time.monotonic() > deadline:
                raise SystemExit("the server under callgrind did not start")
            await asyncio.sleep(0.5)
    async with connect(base, token=make_token(SECRET, "admin"), request_timeout=600) as remote:
        session = remote._session
        stores = [remote.task_store(f"bench{w}", "run", "task") for w in range(CONCURRENCY)]
        body = b'{"value":{"offset":1200,"rows":5}}'

        async def bare(w: int, n: int) -> None:
            async with session.put(base + "/bench/noop", data=body) as response:
                await response.read()

        async def service_set(w: int, n: int) -> None:
            await stores[w].set(f"k{n % 100}", {"offset": n, "rows": 5})

        async def service_get(w: int, n: int) -> None:
            await stores[w].get(f"k{n % 100}")

        async def mark() -> None:
            async with session.put(base + "/bench/mark") as response:
                assert response.status == 200, response.status

        ops: dict[str, Op] = {"bare": bare, "set": service_set, "get": service_get}
        for name in SERVER_WORKLOADS:
            await _drive(ops[name], CONCURRENCY * 4)
        for name in SERVER_WORKLOADS:
            await mark()
            await _drive(ops[name], requests)
        await mark()


async def _answers(session: Any, url: str) -> bool:
    import aiohttp

    try:
        async with session.get(url) as response:
            return bool(response.status == 200)
    except aiohttp.ClientConnectionError:
        return False


def count_server_instructions(db: str, requests: int) -> dict[str, float]:
    """Per workload: the server's instructions per request, the server under callgrind."""
    from bench_http import free_port

    if shutil.which("valgrind") is None:
        raise SystemExit("--server needs valgrind")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="tasktrail-callgrind-") as work:
        out = Path(work) / "callgrind.out"
        server = subprocess.Popen(
            _under_callgrind(out, "--serve", _url(db, work), "--port", str(port)),
            stderr=subprocess.DEVNULL,
        )
        try:
            asyncio.run(_drive_server(f"http://127.0.0.1:{port}", requests))
        finally:
            server.terminate()
            server.wait(120)
        # Dump 1 is the start and the warm-up, then one per workload in order.
        counts = [_total(Path(f"{out}.{i}")) for i in range(2, 2 + len(SERVER_WORKLOADS))]
    return {name: n / requests for name, n in zip(SERVER_WORKLOADS, counts, strict=True)}


def _total(dump: Path) -> int:
    found = re.search(r"^summary: (\d+)", dump.read_text(), re.MULTILINE)
    if found is None:
        raise SystemExit(f"{dump} has no summary line")
    return int(found.group(1))


def _url(db: str, work: str) -> str:
    return "memory://" if db == "memory" else f"sqlite:///{Path(work) / 'service.db'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "memory"], default="sqlite")
    parser.add_argument("--requests", type=int, default=3200, help="per workload")
    parser.add_argument("--callgrind", action="store_true", help="count instructions too")
    parser.add_argument("--top", choices=WORKLOADS, help="list this workload's functions")
    parser.add_argument(
        "--server", action="store_true", help="count the whole server's instructions instead"
    )
    parser.add_argument("--marked-run", metavar="DIR", help=argparse.SUPPRESS)
    parser.add_argument("--serve", metavar="DB_URL", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.marked_run:  # under callgrind: mark the lines between the workloads
        _run(_url(args.db, args.marked_run), args.requests, lambda _: os.getpgid(0))
        return
    if args.serve:  # under callgrind: bench_http's server, with the mark
        from bench_http import serve

        serve(args.serve, args.port, extra=[mark_operation()])
        return
    if args.server:
        server = count_server_instructions(args.db, args.requests)
        print(f"{args.requests} requests per workload, {CONCURRENCY} at once, {args.db}, server")
        for name, n in server.items():
            print(f"{name:<10}{n:>12,.0f} instructions per request")
        print(
            f"server instructions per set / per bare request: {server['set'] / server['bare']:.2f}"
        )
        return
    gc.collect()
    with tempfile.TemporaryDirectory(prefix="tasktrail-bench-") as work:
        calls = count_calls(_url(args.db, work), args.requests, args.top)
    instructions = count_instructions(args.db, args.requests) if args.callgrind else None
    print(f"{args.requests} requests per workload, {CONCURRENCY} at once, {args.db}, in process")
    print(f"{'workload':<10}{'calls/req':>11}{'CPU us/req':>12}{'instr/req':>12}")
    for name in WORKLOADS:
        row = calls[name]
        instr = f"{instructions[name]:>12,.0f}" if instructions else f"{'-':>12}"
        print(f"{name:<10}{row['calls']:>11.1f}{row['cpu_us']:>12.1f}{instr}")
    own = calls["set"]["calls"] - calls["bare"]["calls"] - calls["store"]["calls"]
    line = f"the service's own work per set (set - bare - store): {own:.1f} calls"
    if instructions:
        line += f", {instructions['set'] - instructions['bare'] - instructions['store']:,.0f}"
        line += " instructions"
    print(line)


if __name__ == "__main__":
    main()
