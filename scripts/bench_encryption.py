"""Encryption at rest: write throughput and get latency with encryption on beside off.

    .venv/bin/python scripts/bench_encryption.py [--tasks 64] [--writes 100] [--rounds 5]

Each round runs both modes on a fresh SQLite file, one after the other, in alternating order, so
the load of a shared machine falls on both alike; the medians over rounds are compared. Writers
are concurrent tasks, each writing checkpoints to its own task scope (so each scope needs a data
key), through group commit, with the default durability (fsync on commit).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import anyio

from eventstore import StoreConfig, generate_master_key, open_store


async def run_mode(
    folder: Path, encrypted: bool, tasks: int, writes: int, fresh: bool
) -> tuple[float, float]:
    """(writes per second, median get latency in µs) of one mode on a fresh file.

    fresh: every write goes to a scope never written before, so each needs a new data key (the
    worst case: the key store commits, and syncs, once per batch besides the log).
    """
    name = "enc" if encrypted else "plain"
    url = f"sqlite:///{folder / f'{name}-{time.monotonic_ns()}.db'}"
    config = StoreConfig(master_keys=(generate_master_key(),) if encrypted else ())
    value = {"job_id": "spark-7f3a", "offset": 123456, "token": "x" * 64}
    async with open_store(url, config=config) as store:

        async def writer(n: int) -> None:
            ts = store.task_store("bench", "run", f"task_{n}", try_number=1)
            for i in range(writes):
                if fresh:
                    ts = store.task_store("bench", f"run_{i}", f"task_{n}", try_number=1)
                await ts.set(f"checkpoint_{i % 8}", {**value, "i": i})

        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for n in range(tasks):
                tg.start_soon(writer, n)
        elapsed = time.perf_counter() - started
        latencies = []
        for n in range(tasks):
            for i in range(8):  # keys that were written
                run, key = "run", i
                if fresh:
                    run, key = f"run_{writes - 1 - i}", (writes - 1 - i) % 8
                ts = store.task_store("bench", run, f"task_{n}")
                t0 = time.perf_counter()
                found = await ts.get(f"checkpoint_{key}")
                latencies.append(time.perf_counter() - t0)
                assert found is not None
    return tasks * writes / elapsed, statistics.median(latencies) * 1e6


async def main(tasks: int, writes: int, rounds: int) -> None:
    print(f"bench_encryption: {tasks} tasks x {writes} writes, {rounds} rounds, SQLite, medians")
    for fresh in (False, True):
        results: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            for r in range(rounds):
                order = (False, True) if r % 2 == 0 else (True, False)
                for encrypted in order:
                    results[encrypted].append(
                        await run_mode(folder, encrypted, tasks, writes, fresh)
                    )
        plain_w = statistics.median(w for w, _ in results[False])
        enc_w = statistics.median(w for w, _ in results[True])
        plain_g = statistics.median(g for _, g in results[False])
        enc_g = statistics.median(g for _, g in results[True])
        what = "every write to a new scope" if fresh else "checkpoints of one scope per task"
        print(f"\n{what}")
        print(f"{'':12}{'writes/s':>12}{'get µs (p50)':>16}")
        print(f"{'plaintext':12}{plain_w:>12,.0f}{plain_g:>16.1f}")
        print(f"{'encrypted':12}{enc_w:>12,.0f}{enc_g:>16.1f}")
        print(
            f"encrypted/plaintext: writes {enc_w / plain_w:.0%} (target >= 70%), "
            f"get latency x{enc_g / plain_g:.2f}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=64)
    parser.add_argument("--writes", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    anyio.run(main, args.tasks, args.writes, args.rounds)
