"""Seed a SQLite file with a task that checkpointed across two tries, for the web page.

    .venv/bin/python scripts/ui_demo.py --db demo.db            # then:
    .venv/bin/tasktrail serve --db sqlite:///demo.db
    .venv/bin/tasktrail token --db sqlite:///demo.db --role auditor
    # open http://127.0.0.1:8750/ui/ and paste the token

`--updates N` makes try 1 write N progress checkpoints (10,000 to see a long history).
The browser tests seed the same history with `seed`.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta

import anyio

from eventstore import NEVER_EXPIRE, open_store
from eventstore.store import Store

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DAG, RUN, TASK = "etl_orders", "scheduled__2026-03-01", "load"


class Clock:
    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


async def seed(store: Store, clock: Clock, updates: int = 12) -> None:
    """Try 1 loads batches until it fails; try 2 resumes from its checkpoint and finishes.

    Around it: another task of the run that clears its scratch keys, and an asset.
    """
    one = store.task_store(DAG, RUN, TASK, try_number=1)
    await one.set("job_id", "spark-7f3a", retention=NEVER_EXPIRE)
    clock.advance(2)
    await one.set("lock", "worker-12")
    clock.advance(3)
    rows = 0
    step = 240.0 / max(updates, 1)
    for batch in range(1, updates + 1):
        rows += 5000
        await one.set_many(
            {"progress": {"rows_loaded": rows, "batch": batch, "stage": "load"}, "offset": rows}
        )
        clock.advance(step)
    await one.set("error", f"OOM while loading batch {updates + 1}")

    clock.advance(360)
    two = store.task_store(DAG, RUN, TASK, try_number=2)
    await two.delete("lock")
    clock.advance(1)
    await two.set("lock", "worker-31")
    clock.advance(2)
    await two.set("job_id", "spark-9b1c", retention=NEVER_EXPIRE)
    await two.delete("error")
    clock.advance(5)
    for extra in range(1, 9):
        rows += 5000
        await two.set_many(
            {
                "progress": {"rows_loaded": rows, "batch": updates + extra, "stage": "load"},
                "offset": rows,
            }
        )
        clock.advance(20)
    await two.set("progress", {"rows_loaded": rows, "batch": updates + 8, "stage": "done"})
    clock.advance(2)
    await two.delete("lock")
    await two.set("done", True, retention=NEVER_EXPIRE)

    transform = store.task_store(DAG, RUN, "transform", try_number=1)
    clock.advance(30)
    await transform.set_many({"scratch": "/tmp/part-1", "rows_in": rows})
    clock.advance(10)
    await transform.clear()
    clock.advance(10)
    await transform.set("rows_out", rows - 120)

    clock.advance(5)
    await store.asset_store(name="warehouse.orders").set("watermark", rows)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", default="demo.db", help="SQLite file to seed (created)")
    parser.add_argument("--updates", type=int, default=12, help="progress writes of try 1")
    args = parser.parse_args()
    clock = Clock()
    async with open_store(f"sqlite:///{args.db}", clock=clock) as store:
        await seed(store, clock, args.updates)
    print(f"seeded sqlite:///{args.db}: {DAG}/{RUN}/{TASK} across two tries")


if __name__ == "__main__":
    anyio.run(main)
