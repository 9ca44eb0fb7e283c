"""Write throughput of tasktrail on PostgreSQL beside a plain asyncpg upsert loop, on one server.

For each number of concurrent writers (default 1 and 32), for the same number of seconds:
- tasktrail: one store (pool + group commit), each writer a task instance of its own setting one
  key over and over with `await ts.set(...)`; every acknowledged set is one event in the log,
  committed durably (the default durability: synchronous_commit on).
- raw: each writer its own asyncpg connection doing one plain `INSERT ... ON CONFLICT DO UPDATE`
  per transaction on a one-table schema, the baseline a hand-written checkpoint table would get.
- group: the physical limit of an event log with a projection on one server: the same writers
  hand their writes to one connection, which commits whatever queued up as one transaction of one
  statement (one multi-row insert into an event table keyed by position alone, one multi-row
  upsert into a current-values table) and wakes them; the next batch is what queued meanwhile.
  One round trip and one durable commit per batch, no secondary index, no checks: the least work
  that keeps every write as an event and serves current values.

All run in a fresh schema of the database, dropped at the end. They alternate, round after round,
and each figure is the median of its rounds, so a neighbour's load on a shared machine weighs on
every side alike. The ratios are tasktrail / raw and tasktrail / group.

Run: python scripts/bench_postgres.py [--url postgresql://postgres@127.0.0.1:5432/test]
                                      [--seconds 3] [--rounds 3] [--writers 1,32]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable

import anyio
import asyncpg

from eventstore import NEVER_EXPIRE, open_store
from eventstore.log.backends.postgres.backend import split_url

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
MAX_WRITES = 10_000_000  # per writer and round: a bound on the loop beside its time

RAW_TABLE = """CREATE TABLE raw_checkpoints (
    writer BIGINT PRIMARY KEY, value BYTEA NOT NULL, updated_at BIGINT NOT NULL
)"""
RAW_UPSERT = (
    "INSERT INTO raw_checkpoints (writer, value, updated_at) VALUES ($1, $2, $3) "
    "ON CONFLICT (writer) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at"
)
# The group commit baseline's tables and its one statement per batch.
GROUP_TABLES = (
    """CREATE TABLE group_events (
        seq BIGINT PRIMARY KEY, scope_id BIGINT NOT NULL, key BYTEA, recorded_at BIGINT NOT NULL,
        payload BYTEA NOT NULL
    )""",
    """CREATE TABLE group_current (
        scope_id BIGINT NOT NULL, key BYTEA NOT NULL, value BYTEA NOT NULL, seq BIGINT NOT NULL,
        PRIMARY KEY (scope_id, key)
    )""",
)
GROUP_APPLY = (
    "WITH new_events AS (INSERT INTO group_events (seq, scope_id, key, recorded_at, payload) "
    "SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bytea[], $4::bigint[], $5::bytea[])) "
    "INSERT INTO group_current (scope_id, key, value, seq) "
    "SELECT * FROM unnest($2::bigint[], $3::bytea[], $5::bytea[], $1::bigint[]) "
    "ON CONFLICT (scope_id, key) DO UPDATE SET value = excluded.value, seq = excluded.seq"
)


async def for_seconds(
    writers: int, seconds: float, write: Callable[[int, int], Awaitable[None]]
) -> float:
    """Run `writers` loops of `write(writer, i)` for `seconds` (and at most `MAX_WRITES` each);
    returns writes per second."""
    counts = [0] * writers
    deadline = time.perf_counter() + seconds

    async def loop(writer: int) -> None:
        i = 0
        while time.perf_counter() < deadline and i < MAX_WRITES:
            await write(writer, i)
            i += 1
        counts[writer] = i

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for writer in range(writers):
            tg.start_soon(loop, writer)
    return sum(counts) / (time.perf_counter() - started)


async def tasktrail_rate(url: str, writers: int, seconds: float, round_: int) -> float:
    async with open_store(url) as store:
        stores = [
            store.task_store("bench", f"writers_{writers}_{round_}", f"task_{w}", try_number=1)
            for w in range(writers)
        ]

        async def write(writer: int, i: int) -> None:
            await stores[writer].set("offset", {"rows": i}, retention=NEVER_EXPIRE)

        await for_seconds(writers, min(1.0, seconds), write)  # warm up: scopes, statements
        return await for_seconds(writers, seconds, write)


async def raw_rate(dsn: str, schema: str, writers: int, seconds: float) -> float:
    pool = await asyncpg.create_pool(
        dsn, min_size=writers, max_size=writers, server_settings={"search_path": schema}
    )
    try:
        connections = [await pool.acquire() for _ in range(writers)]

        async def write(writer: int, i: int) -> None:
            conn = connections[writer]
            async with conn.transaction():
                await conn.execute(RAW_UPSERT, writer, b'{"rows":%d}' % i, time.time_ns() // 1000)

        await for_seconds(writers, min(1.0, seconds), write)
        rate = await for_seconds(writers, seconds, write)
        for conn in connections:
            await pool.release(conn)
        return rate
    finally:
        await pool.close()


async def group_rate(dsn: str, schema: str, writers: int, seconds: float) -> float:
    """Raw group commit: `writers` tasks feed one connection, one statement per batch."""
    conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    queued: list[tuple[int, bytes]] = []
    waiting: list[anyio.Event] = []
    wake = anyio.Event()
    seq = await conn.fetchval("SELECT COALESCE(max(seq), 0) FROM group_events")
    stopping = False

    async def commit_loop() -> None:
        nonlocal seq, queued, waiting, wake
        while not (stopping and not queued):
            if not queued:
                await wake.wait()
                wake = anyio.Event()
                continue
            batch, queued = queued, []
            done, waiting = waiting, []
            seqs = list(range(seq + 1, seq + 1 + len(batch)))
            seq += len(batch)
            now = time.time_ns() // 1000
            await conn.execute(
                GROUP_APPLY,
                seqs,
                [writer for writer, _ in batch],
                [b"offset"] * len(batch),
                [now] * len(batch),
                [value for _, value in batch],
            )
            for event in done:
                event.set()

    async def write(writer: int, i: int) -> None:
        event = anyio.Event()
        queued.append((writer, b'{"rows":%d}' % i))
        waiting.append(event)
        wake.set()
        await event.wait()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(commit_loop)
            await for_seconds(writers, min(1.0, seconds), write)
            rate = await for_seconds(writers, seconds, write)
            stopping = True
            wake.set()
        return rate
    finally:
        await conn.close()


async def main(url: str, seconds: float, rounds: int, writer_counts: list[int]) -> None:
    dsn, _ = split_url(url)
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    separator = "&" if "?" in url else "?"
    store_url = f"{url}{separator}schema={schema}"
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f'CREATE SCHEMA "{schema}"')
        for table in (RAW_TABLE, *GROUP_TABLES):
            await admin.execute(f'CREATE TABLE "{schema}".{table.removeprefix("CREATE TABLE ")}')
        server = await admin.fetchval("SHOW server_version")
        sync = await admin.fetchval("SHOW synchronous_commit")
        print(
            f"PostgreSQL {server} at {dsn.split('@')[-1]}, synchronous_commit={sync}, "
            f"{os.cpu_count()} CPUs; median of {rounds} alternating rounds of {seconds:g} s"
        )
        rows = []
        for writers in writer_counts:
            ours: list[float] = []
            raw: list[float] = []
            group: list[float] = []
            for round_ in range(rounds):
                ours.append(await tasktrail_rate(store_url, writers, seconds, round_))
                raw.append(await raw_rate(dsn, schema, writers, seconds))
                group.append(await group_rate(dsn, schema, writers, seconds))
            rows.append(
                (writers, statistics.median(ours), statistics.median(raw), statistics.median(group))
            )
    finally:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()
    print()
    print(
        f"{'writers':>7}  {'tasktrail events/s':>18}  {'raw upserts/s':>13}  "
        f"{'group commit/s':>14}  {'/ raw':>6}  {'/ group':>7}"
    )
    for writers, ours, raw, group in rows:
        print(
            f"{writers:>7}  {ours:>18,.0f}  {raw:>13,.0f}  {group:>14,.0f}  "
            f"{ours / raw:>6.2f}  {ours / group:>7.2f}"
        )
    print("target: tasktrail 32 writers / group commit >= 0.5")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--url", default=os.environ.get("TASKTRAIL_TEST_POSTGRES_URL") or DEFAULT_URL
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="per round and side")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--writers", default="1,32", help="comma-separated writer counts")
    args = parser.parse_args()
    counts = [int(n) for n in args.writers.split(",")]
    anyio.run(main, args.url, args.seconds, args.rounds, counts)
