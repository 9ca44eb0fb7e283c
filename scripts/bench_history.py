"""Benchmark: a point-in-time state read through indexes against a fold of the whole scope, and
pages of history at the start and at the end of a big log.

Builds one task scope of 100,000 events over 1,000 keys in a SQLite file in a temporary
directory, then prints the median time of `History.state` at the middle of the scope, the median
time to fold every event of the scope in Python, and their ratio (target: at least 20x).

Then builds a log of 1,000,000 events (one scope, 1,000 keys) and prints, for a page of 100
events, of 100 events of one key and of 100 events of a key's timeline, the median time at
the start of the log, at its end, and their ratio (target: the same cost, at most 1.5).

    .venv/bin/python scripts/bench_history.py [--events N] [--keys K] [--runs R] [--log-events N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

from eventstore import StoreConfig, TaskScope, open_store
from eventstore.log.backends.base import LogBackend
from eventstore.log.backends.rows import EventFilter
from eventstore.log.events import KeySet, decode_event
from eventstore.log.values import decode_value
from projections import At
from projections.history import History

SCOPE = TaskScope("bench", "run_1", "ingest")


async def build(url: str, events: int, keys: int) -> None:
    config = StoreConfig(durability="normal", default_retention_days=0, max_pending=100_000)
    async with open_store(url, config=config) as store:
        written = 0
        round_ = 0
        while written < events:
            # Try 1 writes the first half of the scope, try 2 the second half.
            try_number = 1 if written < events // 2 else 2
            ts = store.task_store(SCOPE.dag_id, SCOPE.run_id, SCOPE.task_id, try_number=try_number)
            n = min(keys, events - written)
            await ts.set_many({f"key-{i:04d}": {"round": round_, "rows": i} for i in range(n)})
            written += n
            round_ += 1


async def fold_scope(backend: LogBackend, scope_id: int) -> dict[str, Any]:
    """The replay the indexes avoid: read every event of the scope and fold it in Python."""
    state: dict[str, Any] = {}
    after = 0
    while True:
        rows = await backend.select_events(scope_id, EventFilter(after_seq=after, limit=10_000))
        for row in rows:
            match row.kind:
                case "set":
                    event = decode_event(row.payload)
                    assert isinstance(event, KeySet)
                    state[event.key] = decode_value(event.value)
                case "delete":
                    state.pop(row.key or "", None)
                case "clear":
                    state.clear()
        if len(rows) < 10_000:
            return state
        after = rows[-1].seq


async def measure(url: str, events: int, runs: int) -> None:
    async with open_store(url) as store:
        history = store.history(SCOPE)
        assert isinstance(history, History)
        scope_id = await store.scope_id(SCOPE)
        assert scope_id is not None
        middle = At.seq(events // 2)
        state = await history.state(middle)  # warm the cache once, like any reader would
        indexed: list[float] = []
        folded: list[float] = []
        for _ in range(runs):
            start = time.perf_counter()
            state = await history.state(middle)
            indexed.append(time.perf_counter() - start)
            start = time.perf_counter()
            full = await fold_scope(store.backend, scope_id)
            folded.append(time.perf_counter() - start)
        assert len(state) == len(full)
        state_s = statistics.median(indexed)
        fold_s = statistics.median(folded)
        print(f"scope: {events:,} events over {len(full):,} keys (SQLite file)")
        print(f"state(At.seq({events // 2:,})) median of {runs}: {state_s * 1000:8.2f} ms")
        print(f"fold of the whole scope in Python, median of {runs}: {fold_s * 1000:8.2f} ms")
        print(f"ratio fold / indexed state: {fold_s / state_s:.1f}x (target >= 20x)")
        middle_event = (await history.events(after_seq=events // 2 - 1, limit=1))[0]
        others = [
            At.version(middle_event.version),
            At.time(middle_event.recorded_at),
            At.end_of_try(1),
            At.start_of_try(2),
        ]
        for point in others:
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                await history.state(point)
                times.append(time.perf_counter() - start)
            median = statistics.median(times)
            print(f"  state({point}): {median * 1000:8.2f} ms ({fold_s / median:.1f}x)")


PAGE = 100


async def median_of(runs: int, read: Callable[[], Awaitable[list[Any]]]) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        page = await read()
        times.append(time.perf_counter() - start)
        assert len(page) == PAGE, len(page)
    return statistics.median(times)


async def measure_pages(url: str, events: int, runs: int) -> None:
    async with open_store(url) as store:
        history = store.history(SCOPE)
        last = (await history.events(after_seq=events - 1, limit=1))[0].seq
        key = "key-0500"
        # Where a key's last page starts: its events go one per round, 1,000 keys a round.
        tail = await history.events(key=key, after_seq=last - 1_000 * (PAGE + 1))
        key_from = tail[-PAGE - 1].seq
        reads: dict[str, tuple[Callable[[], Awaitable[Any]], Callable[[], Awaitable[Any]]]] = {
            "events": (
                lambda: history.events(after_seq=0, limit=PAGE),
                lambda: history.events(after_seq=last - PAGE, limit=PAGE),
            ),
            "events of one key": (
                lambda: history.events(key=key, after_seq=0, limit=PAGE),
                lambda: history.events(key=key, after_seq=key_from, limit=PAGE),
            ),
            "timeline of one key": (
                lambda: history.timeline(key, after_seq=0, limit=PAGE),
                lambda: history.timeline(key, after_seq=key_from, limit=PAGE),
            ),
        }
        print(f"log: {last:,} events over 1,000 keys (SQLite file); pages of {PAGE}")
        for name, (first, end) in reads.items():
            # Alternating rounds, so load that comes and goes hits both alike.
            at_start: list[float] = []
            at_end: list[float] = []
            for _ in range(runs):
                at_start.append(await median_of(3, first))
                at_end.append(await median_of(3, end))
            start_s, end_s = statistics.median(at_start), statistics.median(at_end)
            print(
                f"  page of {name}: start {start_s * 1000:6.2f} ms, end {end_s * 1000:6.2f} ms, "
                f"ratio end / start {end_s / start_s:.2f} (target <= 1.5)"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--keys", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--log-events", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        start = time.perf_counter()
        anyio.run(build, url, args.events, args.keys)
        print(f"built in {time.perf_counter() - start:.1f} s")
        anyio.run(measure, url, args.events, args.runs)
        url = f"sqlite:///{Path(tmp) / 'log.db'}"
        start = time.perf_counter()
        anyio.run(build, url, args.log_events, args.keys)
        print(f"built in {time.perf_counter() - start:.1f} s")
        anyio.run(measure_pages, url, args.log_events, args.runs)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"load average {load}")


if __name__ == "__main__":
    main()
