"""A writer for the crash test: awaited writes in a loop, each acknowledged on stdout.

Usage: python tests/crash_writer.py PATH_OR_URL WRITERS  (a path is a SQLite file)

WRITERS concurrent tasks each write `set_many({"w{n}-{i}-a": i, "w{n}-{i}-b": i})` for i = 0, 1, …
and print "w{n}-{i} {i}" once the write is acknowledged. It stops by itself after a bounded time,
but the test kills it with SIGKILL long before.
"""

from __future__ import annotations

import sys

import anyio

from eventstore import Store, open_store

TIME_LIMIT = 60.0
MAX_WRITES = 100_000


async def writer(store: Store, n: int) -> None:
    ts = store.task_store("crash", "run", "writer", try_number=1)
    for i in range(MAX_WRITES):
        await ts.set_many({f"w{n}-{i}-a": i, f"w{n}-{i}-b": i})
        sys.stdout.write(f"w{n}-{i} {i}\n")
        sys.stdout.flush()


async def main(path: str, writers: int) -> None:
    url = path if "://" in path else f"sqlite:///{path}"
    with anyio.move_on_after(TIME_LIMIT):
        async with open_store(url) as store, anyio.create_task_group() as tg:
            sys.stdout.write("ready\n")
            sys.stdout.flush()
            for n in range(writers):
                tg.start_soon(writer, store, n)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], int(sys.argv[2]))
