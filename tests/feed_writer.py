"""A writer process for the live-feed tests: appends a fixed number of writes, then exits.

Usage: python tests/feed_writer.py URL NAME WRITES TASKS

TASKS concurrent tasks of one store write WRITES writes in all, to task instances of the DAG
"feed", run NAME (one per task), so two processes never write the same instance.
"""

from __future__ import annotations

import sys

import anyio

from eventstore import Store, open_store


async def writer(store: Store, name: str, n: int, writes: int) -> None:
    ts = store.task_store("feed", name, f"task{n}", try_number=1)
    for i in range(writes):
        if i % 7 == 6:
            await ts.set_many({"a": i, "b": [name, i]})
        else:
            await ts.set("offset", i)


async def main(url: str, name: str, writes: int, tasks: int) -> None:
    async with open_store(url) as store, anyio.create_task_group() as tg:
        for n in range(tasks):
            tg.start_soon(writer, store, name, n, writes // tasks)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
