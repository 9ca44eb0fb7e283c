"""The SQLite write transaction plans from the heads its writer kept: a lone writer's next batch
reads none of them again, and they are read again whenever another connection (of this process
or another) committed to the file since, or the writer's own last transaction did not commit."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import anyio
import pytest
from conftest import FakeClock

from eventstore import StaleAttemptError, Store, open_store
from eventstore.log.backends.rows import Insert, LogHead
from eventstore.log.backends.sqlite.backend import SQLiteBackend
from eventstore.log.envelope import is_sensitive
from eventstore.log.events import RecordedEvent
from eventstore.log.scopes import TaskScope, scope_key

SCOPE = TaskScope("d", "r", "t")


@pytest.fixture(params=["file", "memory"])
def sqlite_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return "sqlite://:memory:"
    return f"sqlite:///{tmp_path / 'trail.db'}"


@pytest.fixture
def file_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'trail.db'}"


def _backend(store: Store) -> SQLiteBackend:
    backend = store.backend
    assert isinstance(backend, SQLiteBackend)
    return backend


@contextmanager
def _statements(store: Store) -> Iterator[list[str]]:
    """The statements the store's write connection runs inside the block."""
    conn = _backend(store)._write_conn
    assert conn is not None
    seen: list[str] = []
    conn.set_trace_callback(seen.append)
    try:
        yield seen
    finally:
        conn.set_trace_callback(None)


def _reads(statements: list[str]) -> list[str]:
    return [s for s in statements if s.lstrip().upper().startswith("SELECT")]


async def _timeline(store: Store, key: str) -> list[RecordedEvent]:
    return await store.history(SCOPE).timeline(key)


async def test_a_lone_writers_next_batches_read_no_heads(sqlite_url: str, clock: FakeClock) -> None:
    async with open_store(sqlite_url, clock=clock) as store:
        ts = store.task_store("d", "r", "t", try_number=1)
        await ts.set("pw", "secret", sensitive=True)
        await ts.set("k", 1)
        with _statements(store) as seen:
            second = await ts.set("k", 2)
            third = await ts.set_many({"pw": "secret-2", "new": 3})
            await store.task_store("d", "r", "t", try_number=2).set("k", 4)
        assert _reads(seen) == [], seen
        assert seen[:2] == ["BEGIN IMMEDIATE", "PRAGMA data_version"]
        assert (second.version, third.version) == (3, 5)
        # The flag of "pw" came from the heads kept: the write that did not say keeps it.
        assert [e.sensitive for e in await _timeline(store, "pw")] == [True, True]
        assert [e.seq for e in await store.history(SCOPE).events(try_number=2)] == [6]
        assert (await store.verify()).ok


async def test_a_new_writer_reads_the_heads_once(file_url: str, clock: FakeClock) -> None:
    async with open_store(file_url, clock=clock) as store:
        await store.task_store("d", "r", "t").set_many({"pw": "secret", "k": 1}, sensitive=True)
    async with open_store(file_url, clock=clock) as store:
        ts = store.task_store("d", "r", "t")
        with _statements(store) as first:
            await ts.set("pw", "secret-2")
        with _statements(store) as second:
            await ts.set("k", 2)
        assert len(_reads(first)) == 3, first  # the log head, the scope, its value heads
        assert _reads(second) == [], second
        assert [e.sensitive for e in await _timeline(store, "k")] == [True, True]


async def test_two_stores_on_one_file_taking_turns_read_each_others_heads(
    file_url: str, clock: FakeClock
) -> None:
    async with open_store(file_url, clock=clock) as one, open_store(file_url, clock=clock) as two:
        results = []
        for i in range(6):
            store = (one, two)[i % 2]
            ts = store.task_store("d", "r", "t", try_number=1 + i // 2)
            results.append(await ts.set("k", i, idempotency_id=f"w{i}"))
        assert [r.version for r in results] == [1, 2, 3, 4, 5, 6]
        assert [r.seq for r in results] == [1, 2, 3, 4, 5, 6]
        # Each store knows "k" as the other left it: its flag, its try, its retried writes.
        await two.task_store("d", "r", "t", try_number=4).set("k", "x", sensitive=True)
        await one.task_store("d", "r", "t", try_number=4).set("k", "y")
        with pytest.raises(StaleAttemptError):
            await two.task_store("d", "r", "t", try_number=3).set("k", "late")
        again = await one.task_store("d", "r", "t", try_number=3).set("k", 5, idempotency_id="w5")
        assert (again.version, again.seq) == (6, 6)
        assert [e.sensitive for e in await _timeline(one, "k")][-2:] == [True, True]
        history = one.history(SCOPE)
        assert [e.seq for e in await history.events(try_number=2)] == [3, 4]
        assert [e.seq for e in await history.events(try_number=4)] == [7, 8]
        assert (await one.verify()).ok


# Another process writes one sensitive value with try 2, then exits.
_OTHER_PROCESS = """
import sys, anyio
from eventstore import open_store

async def main(url):
    async with open_store(url) as store:
        await store.task_store("d", "r", "t", try_number=2).set("pw", "theirs", sensitive=True)

anyio.run(main, sys.argv[1])
"""


async def test_a_write_of_another_process_between_batches_is_read(
    file_url: str, clock: FakeClock
) -> None:
    async with open_store(file_url, clock=clock) as store:
        ts = store.task_store("d", "r", "t", try_number=1)
        await ts.set("pw", "mine")
        await anyio.run_process([sys.executable, "-c", _OTHER_PROCESS, file_url], check=True)
        with pytest.raises(StaleAttemptError):
            await ts.set("pw", "mine-2")
        result = await store.task_store("d", "r", "t", try_number=2).set("pw", "mine-3")
        assert (result.version, result.seq) == (3, 3)
        assert [e.sensitive for e in await _timeline(store, "pw")] == [False, True, True]
        assert [e.seq for e in await store.history(SCOPE).events(try_number=2)] == [2, 3]
        assert (await store.verify()).ok


async def test_writes_after_a_compaction_an_erasure_and_a_clear_of_the_same_store(
    sqlite_url: str, clock: FakeClock
) -> None:
    async with open_store(sqlite_url, clock=clock) as store:
        ts = store.task_store("d", "r", "t")
        await ts.set("pw", "secret", sensitive=True, retention=timedelta(hours=1))
        clock.advance(hours=2)
        await store.compact()  # removes the expired value, and its flag with it
        first = await ts.set("pw", "after-compaction")
        await ts.set("pw", "secret", sensitive=True)
        await store.erase(SCOPE)
        await ts.set("pw", "after-erasure")
        await ts.set("pw", "secret", sensitive=True)
        await ts.clear()
        last = await ts.set("pw", "after-clear")
        timeline = await store.history(SCOPE).timeline("pw", after_seq=first.seq - 1)
        sets = [e for e in timeline if e.kind == "set"]
        assert [e.sensitive for e in sets] == [False, True, False, True, False]
        assert last.version == 10  # 3 sets, erasure's clear and marker, 2 sets, clear, set
        assert await ts.get("pw") == "after-clear"
        assert (await store.verify()).ok


class _RolledBack(Exception):
    pass


async def test_a_batch_that_does_not_commit_leaves_nothing_kept(
    sqlite_url: str, clock: FakeClock
) -> None:
    async with open_store(sqlite_url, clock=clock) as store:
        ts = store.task_store("d", "r", "t")
        await ts.set("k", 1)
        backend, key = _backend(store), scope_key(SCOPE)

        async def batch() -> None:
            async with backend.write() as tx:
                head, scopes = await tx.select_head_and_scopes([key])
                row = scopes[key]
                row.version += 5
                await tx.insert(Insert(scopes=[row]))
                await tx.insert(Insert(head=LogHead(head.last_seq + 5, head.last_recorded_at)))
                raise _RolledBack

        with pytest.raises(_RolledBack):
            await batch()
        async with backend.write() as tx:
            head, scopes = await tx.select_head_and_scopes([key])
        assert (head.last_seq, scopes[key].version) == (1, 1)
        result = await ts.set("k", 2)
        assert (result.version, result.seq) == (2, 2)


async def test_small_scopes_value_heads_are_read_whole_once_and_kept(
    file_url: str, clock: FakeClock
) -> None:
    """t0 holds a sensitive key and a plain one, t1 none any more, t2 more keys than are kept."""
    async with open_store(file_url, clock=clock) as store:
        await store.task_store("d", "r", "t0").set_many({"pw": "secret"}, sensitive=True)
        await store.task_store("d", "r", "t0").set("k", 1)
        await store.task_store("d", "r", "t1").set("gone", 1)
        await store.task_store("d", "r", "t1").delete("gone")
        await store.task_store("d", "r", "t2").set_many({f"k{i:02}": i for i in range(70)})
        await store.task_store("d", "r", "t2").set("zz", "secret", sensitive=True)
    keys = [scope_key(TaskScope("d", "r", task)) for task in ("t0", "t1", "t2")]
    async with open_store(file_url, clock=clock) as store:
        backend, found = _backend(store), []
        for _ in range(2):
            async with backend.write() as tx:
                _, scopes = await tx.select_head_and_scopes(keys)
                t0, t1, t2 = (scopes[key].scope_id for key in keys)
                asked = [(t0, "pw"), (t0, "k"), (t1, "gone"), (t2, "zz"), (t2, "k01"), (t2, "no")]
                with _statements(store) as seen:
                    heads = await tx.select_current_heads(asked)
                found.append((len(_reads(seen)), {p: is_sensitive(h) for p, h in heads.items()}))
    flags = {(t0, "pw"): True, (t0, "k"): False, (t2, "zz"): True, (t2, "k01"): False}
    # The first time, the small scopes whole and the big one's keys; then only the big one's.
    assert found == [(2, flags), (1, flags)]
