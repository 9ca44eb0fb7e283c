"""Benchmark: a point-in-time state read through indexes against a fold of the whole scope.

Builds one task scope of 100,000 events over 1,000 keys in a SQLite file in a temporary
directory, then prints the median time of `History.state` at the middle of the scope, the median
time to fold every event of the scope in Python, and their ratio (target: at least 20x).

    .venv/bin/python scripts/bench_history.py [--events N] [--keys K] [--runs R]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from eventstore import StoreConfig, TaskScope, open_store
from eventstore.log.backends.base import EventFilter, LogBackend
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--keys", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        start = time.perf_counter()
        anyio.run(build, url, args.events, args.keys)
        print(f"built in {time.perf_counter() - start:.1f} s")
        anyio.run(measure, url, args.events, args.runs)


if __name__ == "__main__":
    main()
