"""Where SQLite's COMMIT runs: on the loop thread while commits are quick, else in the worker."""

from __future__ import annotations

import threading
from pathlib import Path

from eventstore import Store, open_store
from eventstore.backends.sqlite import SQLiteBackend
from tests.conftest import FakeClock


def commit_threads(store: Store) -> list[int]:
    """The threads the write connection runs COMMIT in, from now on."""
    backend = store.backend
    assert isinstance(backend, SQLiteBackend)
    conn = backend._write_conn
    assert conn is not None
    threads: list[int] = []

    def trace(statement: str) -> None:
        if statement == "COMMIT":
            threads.append(threading.get_ident())

    conn.set_trace_callback(trace)
    return threads


async def test_quick_commits_run_on_the_loop_thread(tmp_path: Path, clock: FakeClock) -> None:
    async with open_store(f"sqlite:///{tmp_path / 'trail.db'}", clock=clock) as store:
        threads = commit_threads(store)
        ts = store.task_store("d", "r", "t")
        for i in range(5):
            await ts.set("k", i)
        assert threads == [threading.get_ident()] * 5
        assert await ts.get("k") == 4


async def test_slow_commits_go_to_the_worker_thread_until_they_are_quick_again(
    tmp_path: Path, clock: FakeClock
) -> None:
    async with open_store(f"sqlite:///{tmp_path / 'trail.db'}", clock=clock) as store:
        backend = store.backend
        assert isinstance(backend, SQLiteBackend)
        threads = commit_threads(store)
        ts = store.task_store("d", "r", "t")
        backend._commit_seconds = 0.05  # as if the disk had taken 50 ms per fsync lately

        await ts.set("k", 1)
        assert threads[0] != threading.get_ident(), "a slow disk's fsync stalled the loop"
        # The quick commits measured in the worker bring the average down: back on the loop.
        for i in range(30):
            await ts.set("k", i)
        assert threads[-1] == threading.get_ident()
        assert await ts.get("k") == 29
        assert (await store.verify()).ok
