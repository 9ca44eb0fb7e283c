"""SQLite's fast read path still sees every acknowledged write, also another process's."""

from __future__ import annotations

import sqlite3
import sys
import textwrap
from pathlib import Path

import anyio
import pytest

from eventstore import StoreConfig, open_store
from eventstore.log.backends.rows import EventFilter
from eventstore.log.backends.sqlite.backend import SQLiteBackend
from eventstore.log.errors import ConcurrencyError
from tests.conftest import FakeClock


async def test_two_stores_on_one_file_see_each_others_writes(
    tmp_path: Path, clock: FakeClock
) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    async with open_store(url, clock=clock) as a, open_store(url, clock=clock) as b:
        ta, tb = a.task_store("d", "r", "t"), b.task_store("d", "r", "t")
        assert await tb.get("k") is None  # b has looked the scope up before a wrote it
        await ta.set("k", 1)
        assert await tb.get("k") == 1
        assert await tb.items() == {"k": 1}
        assert await tb.version() == 1
        await tb.set("k", 2, expected_version=1)
        assert await ta.get("k") == 2
        # a's write path reads the head b left, not a copy of its own.
        with pytest.raises(ConcurrencyError, match="is at version 2, the write expected 1"):
            await ta.set("k", 3, expected_version=1)
        await ta.delete("k")
        assert await tb.get("k", "gone") == "gone"
        assert await tb.items() == {}


@pytest.mark.slow
async def test_reads_see_writes_acknowledged_in_another_process(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "shared.db"
    url = f"sqlite:///{path}"
    child = textwrap.dedent(
        f"""
        import anyio
        from eventstore import open_store

        async def main():
            async with open_store({url!r}) as store:
                ts = store.task_store("d", "r", "t")
                for i in range(200):
                    await ts.set(f"k{{i}}", i)
                print("acknowledged", flush=True)

        anyio.run(main)
        """
    )
    async with open_store(url, clock=clock) as store:
        mine = store.task_store("d", "r", "t")
        await mine.set("before", True)
        assert await mine.get("k0") is None
        process = await anyio.open_process([sys.executable, "-c", child], cwd=Path.cwd())
        async with process:
            # Write into the same scope while the other process does.
            for i in range(100):
                await mine.set(f"mine{i}", i)
            assert process.stdout is not None
            out = (await process.stdout.receive()).decode()
            assert await process.wait() == 0
        assert "acknowledged" in out
        for i in range(200):
            assert await mine.get(f"k{i}") == i
        assert len(await mine.items()) == 301
        assert await mine.version() == 301
        scope_id = await store.scope_id(mine.scope)
        assert scope_id is not None
        events = await store.backend.select_events(scope_id, EventFilter())
        assert [e.version for e in events] == list(range(1, 302))
        seqs = [e.seq for e in events]
        assert seqs == sorted(seqs)
        assert len(set(seqs)) == 301


async def test_a_read_does_not_wait_for_another_connections_open_write(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "locked.db"
    async with open_store(f"sqlite:///{path}", clock=clock) as store:
        ts = store.task_store("d", "r", "t")
        await ts.set("k", "committed")
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("UPDATE current SET value = ?", (b'"uncommitted"',))
            with anyio.fail_after(2):
                assert await ts.get("k") == "committed"
            other.execute("COMMIT")
            assert await ts.get("k") == "uncommitted"
        finally:
            other.close()


async def test_in_memory_sqlite_reads_its_own_writes(clock: FakeClock) -> None:
    async with open_store("sqlite://:memory:", StoreConfig(), clock=clock) as store:
        ts = store.task_store("d", "r", "t")
        await ts.set_many({"a": 1, "b": [1, 2]})
        await ts.delete("a")
        assert await ts.items() == {"b": [1, 2]}
        assert await ts.version() == 3
        scope_id = await store.scope_id(ts.scope)
        assert scope_id is not None
        events = await store.backend.select_events(scope_id, EventFilter())
        assert [e.kind for e in events] == ["set", "set", "delete"]


async def test_idempotent_retries_in_one_batch_append_once(
    tmp_path: Path, clock: FakeClock
) -> None:
    async with open_store(f"sqlite:///{tmp_path / 'idem.db'}", clock=clock) as store:
        ts = store.task_store("d", "r", "t")
        first = await ts.set("k", 1, idempotency_id="job-1")
        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(lambda: ts.set("k", 2, idempotency_id="job-1"))
                tg.start_soon(lambda: ts.set("other", 2, idempotency_id="job-2"))
        again = await ts.set("k", 3, idempotency_id="job-1")
        assert again == first
        assert await ts.get("k") == 1
        assert await ts.version() == 2  # job-1 once, job-2 once


async def test_a_write_waits_for_another_process_lock_without_blocking_reads(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "busy.db"
    async with open_store(f"sqlite:///{path}", clock=clock) as store:
        ts = store.task_store("d", "r", "t")
        await ts.set("k", 1)
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            written = anyio.Event()

            async def write() -> None:
                await ts.set("k", 2)
                written.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(write)
                with anyio.fail_after(2):
                    for _ in range(5):  # the loop keeps serving reads while the write waits
                        await anyio.sleep(0.02)
                        assert await ts.get("k") == 1
                assert not written.is_set()
                other.execute("COMMIT")
                with anyio.fail_after(5):
                    await written.wait()
            assert await ts.get("k") == 2
            assert await ts.version() == 2
        finally:
            other.close()


async def test_maintenance_runs_on_the_write_connection_between_batches(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "maintained.db"
    async with open_store(f"sqlite:///{path}", clock=clock) as store:
        ts = store.task_store("d", "r", "t")
        for i in range(20):
            await ts.set(f"k{i}", i)
        backend = store.backend
        assert isinstance(backend, SQLiteBackend)

        def checkpoint(conn: sqlite3.Connection) -> tuple[int, int, int]:
            busy, pages, done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            return busy, pages, done

        busy, _, _ = await backend._run_writer(checkpoint)
        assert busy == 0
        assert (tmp_path / "maintained.db-wal").stat().st_size == 0
        await ts.set("after", True)  # the write connection is still good for batches
        assert await ts.get("after") is True
