"""Benchmark: tasktrail's SQLite write and read paths against the physical limit.

The baselines are the least work that does the job, in stdlib sqlite3 on the same disk, WAL,
synchronous=FULL, with no secondary index:

- minimal, 100/tx: per write, one event row appended to a log table and one current-value row
  upserted, 100 writes per transaction;
- raw, 1/tx: the same two statements, one write per transaction (one fsync each);
- raw point select: the current value of one key, by primary key.

Workloads run in alternating rounds (the machine's fsync latency drifts; alternating exposes every
workload to the same drift) and each reports its median round. Prints the three ratios of issue 20:

- tasktrail, 100 writers / minimal 100/tx       (target >= 0.5)
- tasktrail, 1 writer / raw 1/tx                (target >= 0.5)
- tasktrail get p50 / raw point select p50      (target <= 1.5)

    .venv/bin/python scripts/bench_store.py [--writes N] [--serial N] [--gets N] [--rounds R]
"""

from __future__ import annotations

import argparse
import gc
import os
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

import anyio
import msgspec

from eventstore import StoreConfig, open_store
from eventstore.store import Store

TASKS: Final = 100
KEY: Final = "progress"

_MINIMAL_SCHEMA: Final = (
    """CREATE TABLE events (
        seq INTEGER PRIMARY KEY, scope_id INTEGER NOT NULL, version INTEGER NOT NULL,
        kind TEXT NOT NULL, key TEXT, recorded_at INTEGER NOT NULL, payload BLOB NOT NULL)""",
    """CREATE TABLE current (
        scope_id INTEGER NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
        version INTEGER NOT NULL, seq INTEGER NOT NULL,
        PRIMARY KEY (scope_id, key)) WITHOUT ROWID""",
)
_INSERT: Final = "INSERT INTO events VALUES (?, ?, ?, 'set', ?, ?, ?)"
_UPSERT: Final = (
    "INSERT INTO current VALUES (?, ?, ?, ?, ?) ON CONFLICT (scope_id, key) "
    "DO UPDATE SET value = excluded.value, version = excluded.version, seq = excluded.seq"
)
_SELECT: Final = "SELECT value FROM current WHERE scope_id = ? AND key = ?"

_encode = msgspec.json.Encoder().encode


def _value(i: int) -> dict[str, int]:
    return {"rows": i, "page": i // 10}


def minimal(path: Path, writes: int, batch: int) -> float:
    """Writes/s of the least an event log with a projection does."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    for statement in _MINIMAL_SCHEMA:
        conn.execute(statement)
    versions = [0] * TASKS
    started = time.perf_counter()
    for first in range(0, writes, batch):
        conn.execute("BEGIN IMMEDIATE")
        for i in range(first, min(first + batch, writes)):
            scope = i % TASKS
            versions[scope] += 1
            value = _encode(_value(i))
            payload = b'{"kind":"set","key":"progress","value":' + value + b"}"
            conn.execute(_INSERT, (i + 1, scope, versions[scope], KEY, time.time_ns(), payload))
            conn.execute(_UPSERT, (scope, KEY, value, versions[scope], i + 1))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return writes / elapsed


async def _write(store: Store, writes: int, writers: int) -> None:
    async def writer(w: int, count: int) -> None:
        ts = store.task_store("bench", "run", f"task_{w}", try_number=1)
        for i in range(count):
            await ts.set(KEY, _value(i))

    async with anyio.create_task_group() as tg:
        for w in range(writers):
            tg.start_soon(writer, w, writes // writers + (1 if w < writes % writers else 0))


async def _tasktrail(path: Path, writes: int, writers: int) -> float:
    async with open_store(f"sqlite:///{path}", StoreConfig(durability="full")) as store:
        started = time.perf_counter()
        await _write(store, writes, writers)
        elapsed = time.perf_counter() - started
    return writes / elapsed


def tasktrail(path: Path, writes: int, writers: int) -> float:
    """Writes/s of `writers` concurrent tasks, each setting one key of its own task scope."""
    return anyio.run(_tasktrail, path, writes, writers)


async def _gets(path: Path, gets: int) -> list[int]:
    async with open_store(f"sqlite:///{path}") as store:
        accessors = [store.task_store("bench", "run", f"task_{w}") for w in range(TASKS)]
        for ts in accessors:  # warm the statement cache and the scope ids
            await ts.get(KEY)
        samples = []
        for i in range(gets):
            ts = accessors[i % TASKS]
            started = time.perf_counter_ns()
            await ts.get(KEY)
            samples.append(time.perf_counter_ns() - started)
    return samples


def get_p50(path: Path, gets: int) -> float:
    """p50 µs of tasktrail's `get` on the file a tasktrail workload wrote."""
    return statistics.median(anyio.run(_gets, path, gets)) / 1000


def raw_get_p50(path: Path, gets: int) -> float:
    """p50 µs of a primary-key select of one current value, on the minimal layout's file."""
    conn = sqlite3.connect(path, isolation_level=None)
    for scope in range(TASKS):  # warm, as the tasktrail reads are
        conn.execute(_SELECT, (scope, KEY)).fetchone()
    samples = []
    for i in range(gets):
        started = time.perf_counter_ns()
        conn.execute(_SELECT, (i % TASKS, KEY)).fetchone()
        samples.append(time.perf_counter_ns() - started)
    conn.close()
    return statistics.median(samples) / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--writes", type=int, default=60_000, help="writes per 100/tx round")
    parser.add_argument("--serial", type=int, default=1_000, help="writes per 1/tx round")
    parser.add_argument("--gets", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    w, s, g = args.writes, args.serial, args.gets
    workloads: dict[str, Callable[[Path], float]] = {
        "minimal 100/tx": lambda f: minimal(f, w, 100),
        "tasktrail 100 writers": lambda f: tasktrail(f, w, 100),
        "raw 1/tx": lambda f: minimal(f, s, 1),
        "tasktrail 1 writer": lambda f: tasktrail(f, s, 1),
        "raw point select p50 µs": lambda f: raw_get_p50(f.with_name("minimal 100_tx.db"), g),
        "tasktrail get p50 µs": lambda f: get_p50(f.with_name("tasktrail 100 writers.db"), g),
    }
    results: dict[str, list[float]] = {name: [] for name in workloads}
    print(f"load average at start: {os.getloadavg()[0]:.2f}, cores: {os.cpu_count()}")
    for round_ in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
            for name, measure in workloads.items():
                gc.collect()
                results[name].append(measure(Path(tmp) / f"{name.replace('/', '_')}.db"))
        print(
            f"round {round_ + 1}/{args.rounds}: "
            + ", ".join(f"{name} {values[-1]:,.1f}" for name, values in results.items())
        )
    med = {name: statistics.median(values) for name, values in results.items()}
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    print("medians: " + ", ".join(f"{name} {value:,.1f}" for name, value in med.items()))
    for label, num, den, least, most in (
        (
            "tasktrail 100 writers / minimal 100/tx",
            "tasktrail 100 writers",
            "minimal 100/tx",
            0.5,
            None,
        ),
        ("tasktrail 1 writer / raw 1/tx", "tasktrail 1 writer", "raw 1/tx", 0.5, None),
        (
            "get p50 / raw point select p50",
            "tasktrail get p50 µs",
            "raw point select p50 µs",
            None,
            1.5,
        ),
    ):
        ratio = med[num] / med[den]
        ok = (least is None or ratio >= least) and (most is None or ratio <= most)
        target = f">= {least}" if least is not None else f"<= {most}"
        print(f"{label}: {ratio:.2f} (target {target}) {'met' if ok else 'MISSED'}")


if __name__ == "__main__":
    main()
