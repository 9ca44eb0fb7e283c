"""Benchmark: compaction of a large SQLite store while a writer keeps writing.

Builds a store of `--events` events (default 500,000) in a SQLite file in a temporary
directory, where 90% can go:

- 54% belong to keys of old runs whose retention (1 day) has passed;
- 36% are superseded history of live keys, older than the 7-day history horizon;
- 10% stay: the current values of those live keys, and fresh values of recent runs.

Then it compacts the store (history_horizon_days=7) while one writer sets a key in a loop, and
prints the compaction time, events removed per second, the file sizes (database + WAL) before
and after (target: after <= 20% of before), and the longest time the writer waited for one
acknowledged write during compaction (target: under 100 ms).

Right after, it compacts again and prints the second run's time over the first's (target: under
0.1; planning reads only what changed since the first run).

Then it does the same again, from a copy of the same store, with an audit archive
(`StoreConfig(archive_url=...)`), and prints the two side by side: the time ratio (archive on /
off), the archive's bytes per archived event, and the same size and wait targets with the
archive on.

    .venv/bin/python scripts/bench_compaction.py [--events N] [--db PATH] [--archive-only]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio

from eventstore import NEVER_EXPIRE, Store, StoreConfig, open_store
from eventstore.log.append import append_batch
from eventstore.log.backends.base import WriteTransaction
from eventstore.log.config import NeverExpire
from eventstore.log.requests import AppendRequest, SetOp
from eventstore.log.scopes import TaskScope
from eventstore.log.values import encode_value

KEYS = 10  # keys per scope
ROUNDS = 10  # every key of the old scopes is set this many times
REQUESTS_PER_TX = 500


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def value(scope: int, key: int, round_: int) -> bytes:
    return encode_value(
        "k",
        {"scope": scope, "key": key, "round": round_, "offset": round_ * 1000, "note": "x" * 40},
        0,
    )


async def build(store: Store, clock: Clock, events: int) -> None:
    """Raw appends straight into the log's write path, thousands of events per transaction."""
    per_scope = KEYS * ROUNDS
    expired_scopes = int(events * 0.54) // per_scope
    live_scopes = int(events * 0.40) // per_scope
    fresh_events = events - (expired_scopes + live_scopes) * per_scope
    retention_1d: timedelta | NeverExpire = timedelta(days=1)

    async def flush(requests: list[AppendRequest]) -> None:
        for start in range(0, len(requests), REQUESTS_PER_TX):
            await append_batch(
                store.backend, requests[start : start + REQUESTS_PER_TX], store.config, clock()
            )

    # Old runs, in time order: every scope writes each round, one round a minute.
    for round_ in range(ROUNDS):
        requests = []
        for s in range(expired_scopes + live_scopes):
            expired = s < expired_scopes
            ops = [
                SetOp(f"k{k}", value(s, k, round_), retention_1d if expired else NEVER_EXPIRE)
                for k in range(KEYS)
            ]
            requests.append(AppendRequest(scope=TaskScope("old", f"run{s}", "task"), ops=ops))
        await flush(requests)
        clock.now += timedelta(minutes=1)
    # A month later: recent runs, each key written once.
    clock.now += timedelta(days=30)
    requests = []
    for s in range(fresh_events // (KEYS * 10)):
        ops = [SetOp(f"k{k}", value(s, k, 0), NEVER_EXPIRE) for k in range(KEYS * 10)]
        requests.append(AppendRequest(scope=TaskScope("new", f"run{s}", "task"), ops=ops))
    await flush(requests)


async def disk_bytes(path: Path) -> int:
    total = 0
    for suffix in ("", "-wal"):
        p = anyio.Path(f"{path}{suffix}")
        if await p.exists():
            total += (await p.stat()).st_size
    return total


class Outcome:
    def __init__(
        self,
        elapsed: float,
        removed: int,
        before: int,
        after: int,
        longest: float,
        archive_bytes: int,
        archiving: float,
    ) -> None:
        self.elapsed = elapsed
        self.removed = removed
        self.before = before
        self.after = after
        self.longest = longest
        self.archive_bytes = archive_bytes
        self.archiving = archiving


async def build_store(events: int, path: Path) -> float:
    clock = Clock()
    # Built without an fsync per commit, for speed; compacted with the default durability.
    build_config = StoreConfig(history_horizon_days=7, durability="normal")
    started = time.monotonic()
    async with open_store(f"sqlite:///{path}", config=build_config, clock=clock) as store:
        await build(store, clock, events)
        await store.backend.checkpoint()
    return time.monotonic() - started


async def compact_once(path: Path, archive: Path | None, built: float) -> Outcome:
    clock = Clock()
    clock.now += timedelta(days=30, minutes=10 + 60)
    label = "archive on" if archive is not None else "archive off"
    print(f"--- compaction, {label}")
    config = StoreConfig(
        history_horizon_days=7, archive_url=None if archive is None else str(archive)
    )
    url = f"sqlite:///{path}"
    async with open_store(url, config=config, clock=clock) as store:
        total = sum(r.version for r in await store.backend.select_scopes())
        before = await disk_bytes(path)
        print(f"store: {total:,} events in {built:.1f} s, {before / 2**20:,.1f} MiB (db + WAL)")

        # How long each write transaction holds the write lock, compaction's and the writer's.
        holds: dict[str, list[float]] = {}
        write = store.backend.write

        @asynccontextmanager
        async def timed_write() -> AsyncIterator[WriteTransaction]:
            async with write() as tx:
                t0 = time.perf_counter()
                yield tx
                if writing:  # not verify's, after compaction
                    holds.setdefault(phase[-1], []).append(time.perf_counter() - t0)

        store.backend.write = timed_write  # type: ignore[method-assign]

        phase = ["baseline"]
        waits: dict[str, list[float]] = {}
        writing = True

        async def writer() -> None:
            ts = store.task_store("live", "run", "writer", try_number=1)
            i = 0
            while writing:
                t0 = time.perf_counter()
                await ts.set("progress", i, retention=NEVER_EXPIRE)
                waits.setdefault(phase[-1], []).append(time.perf_counter() - t0)
                i += 1
                await anyio.sleep(0.001)

        started: dict[str, float] = {}

        def progress(name: str, done: int, total: int) -> None:
            if phase[-1] != name:
                phase.append(name)
                started[name] = time.monotonic()

        async with anyio.create_task_group() as tg:
            tg.start_soon(writer)
            await anyio.sleep(2)  # the writer alone, for comparison
            phase.append("plan")
            t0 = started["plan"] = time.monotonic()
            report = await store.compact(progress=progress)
            elapsed = time.monotonic() - t0
            writing = False
        # Right after: nothing changed but the writer's key, so planning should read only that.
        second_phases: dict[str, float] = {}

        def second_progress(name: str, done: int, total: int) -> None:
            second_phases.setdefault(name, time.monotonic())

        t1 = time.monotonic()
        second = await store.compact(progress=second_progress)
        again = time.monotonic() - t1
        second_ends = [*list(second_phases.values())[1:], t1 + again]
        second_took = {
            name: end - begin
            for (name, begin), end in zip(second_phases.items(), second_ends, strict=True)
        }
        verified = await store.verify()
    after = await disk_bytes(path)

    removed_share = report.events_removed / total
    print(
        f"removed: {report.events_removed:,} events ({removed_share:.0%}): "
        f"{report.expired_events:,} of {report.keys_expired:,} expired keys, "
        f"{report.superseded_events:,} superseded beyond the horizon, "
        f"{report.tombstones:,} tombstones; {report.scopes_touched:,} scopes touched"
    )
    print(f"compaction time: {elapsed:.2f} s ({report.events_removed / elapsed:,.0f} events/s)")
    ends = [*list(started.values())[1:], t0 + elapsed]
    took = {name: end - begin for (name, begin), end in zip(started.items(), ends, strict=True)}
    print("  phases: " + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in took.items()))
    print(
        f"second compaction right after: {again:.3f} s, {second.events_removed:,} events removed; "
        f"ratio second/first {again / elapsed:.3f} (target < 0.1)"
    )
    print(
        "  phases: " + ", ".join(f"{name} {seconds:.3f} s" for name, seconds in second_took.items())
    )
    print(
        f"on disk (db + WAL): before {before / 2**20:,.1f} MiB, after {after / 2**20:,.1f} MiB "
        f"= {after / before:.1%} of before (target <= 20%)"
    )
    if report.archive_file is not None:
        print(
            f"archive: {report.archive_file}, {report.archive_bytes / 2**20:,.1f} MiB, "
            f"{report.archive_bytes / report.events_removed:.1f} bytes per archived event"
        )
    during = sorted(w for name, ws in waits.items() if name != "baseline" for w in ws)
    print(
        f"concurrent writer: {len(during):,} acknowledged writes during compaction, "
        f"median wait {during[len(during) // 2] * 1000:.1f} ms, "
        f"p99 {during[int(len(during) * 0.99)] * 1000:.1f} ms, "
        f"longest {during[-1] * 1000:.1f} ms (target < 100 ms)"
    )
    for name, ws in waits.items():
        held = holds.get(name, [0.0])
        print(
            f"  {name:>8}: {len(ws):5,} writes, longest wait {max(ws) * 1000:6.1f} ms, "
            f"median {sorted(ws)[len(ws) // 2] * 1000:.1f} ms; "
            f"{len(held):5,} write transactions, longest held {max(held) * 1000:6.1f} ms"
        )
    held = sorted(h for name, hs in holds.items() if name != "baseline" for h in hs)
    print(
        f"write transactions during compaction (writer's and compaction's): {len(held):,}, "
        f"p99 held {held[int(len(held) * 0.99)] * 1000:.1f} ms, "
        f"longest held {held[-1] * 1000:.1f} ms"
    )
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"verify after compaction: {'ok' if verified.ok else 'MISMATCH'}; load average {load}")
    return Outcome(
        elapsed,
        report.events_removed,
        before,
        after,
        during[-1],
        report.archive_bytes,
        took.get("archive", 0.0),
    )


async def main(events: int, path: Path, archive_only: bool = False) -> None:
    built = await build_store(events, path)
    # The same store twice: compacted without an archive, and (from a copy) with one.
    copy = path.with_name(path.stem + "-archived.db")
    shutil.copyfile(path, copy)
    archive = path.with_name(path.stem + "-archive")
    shutil.rmtree(archive, ignore_errors=True)
    off = None if archive_only else await compact_once(path, None, built)
    on = await compact_once(copy, archive, built)
    print("--- archive on beside off")
    if off is not None:
        print(
            f"compaction time: {on.elapsed:.2f} s with the archive, {off.elapsed:.2f} s "
            f"without: ratio {on.elapsed / off.elapsed:.2f}"
        )
        print(
            f"longest writer wait: {on.longest * 1000:.1f} ms with, "
            f"{off.longest * 1000:.1f} ms without (target < 100 ms)"
        )
        print(
            f"size after: {on.after / on.before:.1%} of before with, "
            f"{off.after / off.before:.1%} without (target <= 20%)"
        )
    print(
        f"writing the archive file took {on.archiving:.2f} s of the {on.elapsed:.2f} s "
        f"({on.removed / max(on.archiving, 1e-9):,.0f} events/s)"
    )
    print(
        f"archive: {on.archive_bytes:,} bytes for {on.removed:,} events = "
        f"{on.archive_bytes / max(on.removed, 1):.1f} bytes per archived event "
        f"(the log held {on.before / max(on.removed, 1):.0f} bytes per event before)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--db", type=Path, default=None, help="keep the store at this path")
    parser.add_argument(
        "--archive-only", action="store_true", help="only the compaction with the archive"
    )
    args = parser.parse_args()
    if args.db is not None:
        anyio.run(main, args.events, args.db, args.archive_only)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            anyio.run(main, args.events, Path(tmp) / "bench.db", args.archive_only)
