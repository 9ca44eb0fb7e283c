"""Write throughput of tasktrail on PostgreSQL beside a plain asyncpg upsert loop, on one server.

For each number of concurrent writers (default 1 and 32), for the same number of seconds:
- tasktrail: one store (pool + group commit), each writer a task instance of its own setting one
  key over and over with `await ts.set(...)`; every acknowledged set is one event in the log,
  committed durably (the default durability: synchronous_commit on).
- raw: each writer its own asyncpg connection doing one plain `INSERT ... ON CONFLICT DO UPDATE`
  per transaction on a one-table schema, the baseline a hand-written checkpoint table would get.

Both run in a fresh schema of the database, dropped at the end. The two alternate, round after
round, and each figure is the median of its rounds, so a neighbour's load on a shared machine
weighs on both sides alike. The ratio is tasktrail / raw.

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

RAW_TABLE = """CREATE TABLE raw_checkpoints (
    writer BIGINT PRIMARY KEY, value BYTEA NOT NULL, updated_at BIGINT NOT NULL
)"""
RAW_UPSERT = (
    "INSERT INTO raw_checkpoints (writer, value, updated_at) VALUES ($1, $2, $3) "
    "ON CONFLICT (writer) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at"
)


async def for_seconds(
    writers: int, seconds: float, write: Callable[[int, int], Awaitable[None]]
) -> float:
    """Run `writers` loops of `write(writer, i)` for `seconds`; returns writes per second."""
    counts = [0] * writers
    deadline = time.perf_counter() + seconds

    async def loop(writer: int) -> None:
        i = 0
        while time.perf_counter() < deadline:
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


async def main(url: str, seconds: float, rounds: int, writer_counts: list[int]) -> None:
    dsn, _ = split_url(url)
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    separator = "&" if "?" in url else "?"
    store_url = f"{url}{separator}schema={schema}"
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f'CREATE SCHEMA "{schema}"')
        await admin.execute(f'CREATE TABLE "{schema}".{RAW_TABLE.removeprefix("CREATE TABLE ")}')
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
            for round_ in range(rounds):
                ours.append(await tasktrail_rate(store_url, writers, seconds, round_))
                raw.append(await raw_rate(dsn, schema, writers, seconds))
            rows.append((writers, statistics.median(ours), statistics.median(raw)))
    finally:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()
    print()
    print(f"{'writers':>7}  {'tasktrail events/s':>18}  {'raw upserts/s':>13}  {'ratio':>6}")
    for writers, ours, raw in rows:
        print(f"{writers:>7}  {ours:>18,.0f}  {raw:>13,.0f}  {ours / raw:>6.2f}")


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
