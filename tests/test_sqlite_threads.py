"""Which thread runs SQLite's steps: COMMIT on the loop thread while commits are quick, else in
the worker; and the worker still serves a store closed as the interpreter exits."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

from eventstore import Store, StoreConfig, open_store
from eventstore.log.backends.sqlite.backend import SQLiteBackend
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
    # What is tested is the moving average, not this disk: without the fsync (durability
    # "normal") a commit stays quick however loaded the machine is.
    config = StoreConfig(durability="normal")
    async with open_store(f"sqlite:///{tmp_path / 'trail.db'}", config, clock) as store:
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


def test_a_store_closed_from_an_atexit_handler_closes_its_file(tmp_path: Path) -> None:
    # As the Airflow backend does: the store lives on an event loop in a thread of its own, and
    # an atexit handler closes it, when Python has already shut down concurrent.futures.
    path = tmp_path / "trail.db"
    child = textwrap.dedent(
        f"""
        import atexit
        from anyio.from_thread import start_blocking_portal
        from eventstore import open_store

        portal_cm = start_blocking_portal()
        portal = portal_cm.__enter__()
        store_cm = portal.wrap_async_context_manager(open_store({f"sqlite:///{path}"!r}))
        store = store_cm.__enter__()
        portal.call(store.task_store("d", "r", "t").set, "k", 1)

        @atexit.register
        def close():
            store_cm.__exit__(None, None, None)
            portal_cm.__exit__(None, None, None)
            print("closed", flush=True)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", child], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "closed" in done.stdout, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    # The last connection to close folded the WAL back into the file.
    assert not Path(f"{path}-wal").exists()
