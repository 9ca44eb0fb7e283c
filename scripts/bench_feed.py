"""Benchmark the live feed (`store.subscribe`): latency to a subscriber, and catching up.

1. Latency: WRITERS concurrent writers (100 by default) each write to a task instance of their
   own in a loop; one subscriber follows the log. For every event it gets, the latency is the
   wall time it got the event minus the event's `recorded_at` (the batch's time, taken just
   before its transaction commits), so commit time is included. Measured with the writers in
   the subscriber's process (woken by the commit) and in another process (found by polling the
   log head), printed as p50/p99/max.
2. Catch-up: a log of EVENTS events (1,000,000 by default) is read by a subscriber from position
   0 to the end, decoded into `RecordedEvent`s, and by a raw scan of the same rows: the
   backend's `select_all_events` (SELECT ... WHERE seq > ? ORDER BY seq LIMIT ?, the rows as
   bytes) and, on SQLite, a plain `sqlite3` cursor over `SELECT * FROM events ORDER BY seq`.
   Printed as events per second and the subscriber's time as a ratio to each raw scan.

    .venv/bin/python scripts/bench_feed.py [--db URL] [--writers 100] [--seconds 5]
        [--events 1000000] [--time-limit 600]

Without --db it uses a SQLite file in a temporary directory. --time-limit bounds the whole run
(building the log included): the benchmark stops there and says so.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import anyio

from eventstore import RecordedEvent, Store, StoreConfig, open_store

ROOT = Path(__file__).resolve().parent.parent
CONFIG = StoreConfig(durability="normal", default_retention_days=0, max_pending=100_000)


async def write_for(url: str, writers: int, seconds: float, run: str) -> int:
    """`writers` tasks write to their own task instances until `seconds` have passed."""
    async with open_store(url, config=CONFIG) as store:
        return await write_with(store, writers, seconds, run)


async def write_with(store: Store, writers: int, seconds: float, run: str) -> int:
    written = 0
    deadline = time.monotonic() + seconds
    if True:

        async def writer(n: int) -> None:
            nonlocal written
            ts = store.task_store("bench", run, f"writer-{n}", try_number=1)
            i = 0
            while time.monotonic() < deadline:
                await ts.set("progress", {"i": i, "n": n})
                i += 1
                written += 1

        async with anyio.create_task_group() as tg:
            for n in range(writers):
                tg.start_soon(writer, n)
    return written


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def latency(url: str, writers: int, seconds: float, other_process: bool) -> None:
    async with open_store(url, config=CONFIG) as store:
        start = (await store.backend.select_head()).last_seq
        run = f"latency-{'proc' if other_process else 'here'}-{time.time_ns()}"
        delays: list[float] = []
        finished = anyio.Event()

        async def follow() -> None:
            async with store.subscribe(after_seq=start) as events:
                async for event in events:
                    if event.key == "progress":
                        delays.append(time.time() - event.recorded_at.timestamp())
                    if finished.is_set() and event.seq >= final:
                        return

        final = 2**62
        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            if other_process:
                command = [sys.executable, __file__, "--child", url, str(writers), str(seconds)]
                await anyio.run_process(command, stdout=None, stderr=None, check=True)
            else:
                await write_with(store, writers, seconds, run)
            final = (await store.backend.select_head()).last_seq
            finished.set()
            # Wake the subscriber if it is already past the end.
            await store.task_store("bench", run, "done").set("done", True)
    where = "another process" if other_process else "the subscriber's process"
    ms = [d * 1000 for d in delays]
    print(
        f"latency, {writers} writers in {where}: {len(ms)} events in {seconds:.0f} s "
        f"({len(ms) / seconds:,.0f}/s); commit-to-subscriber p50 {percentile(ms, 0.5):.1f} ms, "
        f"p99 {percentile(ms, 0.99):.1f} ms, max {max(ms):.1f} ms"
    )


async def build(url: str, events: int) -> None:
    async with open_store(url, config=CONFIG) as store:
        have = (await store.backend.select_head()).last_seq
        if have >= events:
            return
        per_request = 200
        requests = (events - have + per_request - 1) // per_request
        started = time.perf_counter()

        async def writer(first: int, step: int) -> None:
            for r in range(first, requests, step):
                ts = store.task_store("catchup", f"run-{r % 50}", f"task-{r % 20}")
                await ts.set_many({f"k{i}": {"r": r, "i": i} for i in range(per_request)})

        async with anyio.create_task_group() as tg:
            for n in range(16):
                tg.start_soon(writer, n, 16)
        took = time.perf_counter() - started
        total = (await store.backend.select_head()).last_seq
        print(f"built a log of {total:,} events in {took:.1f} s")


async def catch_up(url: str) -> None:
    async with open_store(url, config=CONFIG) as store:
        head = (await store.backend.select_head()).last_seq

        started = time.perf_counter()
        raw = 0
        async for _ in store.backend.select_all_events(after_seq=0, batch=1000):
            raw += 1
        raw_s = time.perf_counter() - started

        started = time.perf_counter()
        seen = 0
        last: RecordedEvent | None = None
        async with store.subscribe(after_seq=0, through_seq=head, page=1000) as events:
            async for event in events:
                seen += 1
                last = event
        sub_s = time.perf_counter() - started
        assert seen == raw, (seen, raw)
        assert last is None or last.seq == head

    print(
        f"catch-up of {seen:,} events: subscribe {sub_s:.2f} s ({seen / sub_s:,.0f}/s); "
        f"raw scan through the backend (select_all_events, rows as bytes) {raw_s:.2f} s "
        f"({raw / raw_s:,.0f}/s); ratio {sub_s / raw_s:.2f}x"
    )
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        started = time.perf_counter()
        conn = sqlite3.connect(path)
        count = 0
        for _ in conn.execute("SELECT * FROM events ORDER BY seq"):
            count += 1
        conn.close()
        plain_s = time.perf_counter() - started
        print(
            f"  plain sqlite3 cursor over SELECT * FROM events ORDER BY seq: {plain_s:.2f} s "
            f"({count / plain_s:,.0f}/s); subscribe / plain scan {sub_s / plain_s:.2f}x"
        )


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = args.db or f"sqlite:///{Path(tmp) / 'feed.db'}"
        print(f"store: {url if args.db else 'a SQLite file in a temporary directory'}")
        with anyio.move_on_after(args.time_limit) as limit:
            await latency(url, args.writers, args.seconds, other_process=False)
            await latency(url, args.writers, args.seconds, other_process=True)
            catch_url = url
            if not args.db:
                catch_url = f"sqlite:///{Path(tmp) / 'catchup.db'}"
            await build(catch_url, args.events)
            await catch_up(catch_url)
        if limit.cancelled_caught:
            print(f"stopped at the time limit of {args.time_limit:.0f} s")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        # The writers of the other-process latency run.
        child_url, child_writers, child_seconds = sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
        anyio.run(write_for, child_url, child_writers, child_seconds, f"proc-{os.getpid()}")
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="store URL (default: a SQLite file in a temporary dir)")
    parser.add_argument("--writers", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=5.0, help="of writing, per run")
    parser.add_argument("--events", type=int, default=1_000_000, help="in the catch-up log")
    parser.add_argument("--time-limit", type=float, default=600.0, help="seconds, in all")
    anyio.run(main, parser.parse_args())
