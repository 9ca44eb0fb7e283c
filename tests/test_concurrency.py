"""Many tasks through one store: each sees its own writes, and one bad request in a batch fails
alone."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from eventstore import ConcurrencyError, StaleAttemptError, Store, TaskScope, TaskStore
from eventstore.log.append import append_batch
from eventstore.log.requests import AppendRequest, AppendResult, DeleteOp, SetOp
from eventstore.log.values import encode_value

if TYPE_CHECKING:
    from conftest import StoreFactory

TASKS = 100
ROUNDS = 5


def set_op(key: str, value: object) -> SetOp:
    return SetOp(key, encode_value(key, value, 0))


async def test_hundred_concurrent_tasks_read_their_own_writes(store: Store) -> None:
    shared = store.task_store("etl", "run_1", "shared")

    async def worker(n: int) -> None:
        own = store.task_store("etl", "run_1", f"task_{n}", try_number=1)
        for i in range(ROUNDS):
            await shared.set(f"key-{n}", {"n": n, "i": i})
            assert await shared.get(f"key-{n}") == {"n": n, "i": i}
            await own.set_many({"offset": i, "progress": [n, i]})
            assert await own.items() == {"offset": i, "progress": [n, i]}
        await own.delete("progress")
        assert await own.get("progress") is None
        assert await own.items() == {"offset": ROUNDS - 1}

    await asyncio.gather(*(worker(n) for n in range(TASKS)))

    assert await shared.items() == {f"key-{n}": {"n": n, "i": ROUNDS - 1} for n in range(TASKS)}
    assert await shared.version() == TASKS * ROUNDS
    events = [row async for row in store.backend.select_all_events()]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert len(events) == TASKS * ROUNDS * 3 + TASKS
    report = await store.verify()
    assert report.ok, report.mismatches


async def test_hundred_concurrent_tasks_on_one_key_leave_the_last_write(store: Store) -> None:
    ts = store.task_store("etl", "run_1", "hot")
    results = await asyncio.gather(*(ts.set("counter", n) for n in range(TASKS)))
    last = max(results, key=lambda r: r.version)
    assert sorted(r.version for r in results) == list(range(1, TASKS + 1))
    assert await ts.get("counter") == results.index(last)
    assert (await store.verify()).ok


async def test_one_batch_fails_only_the_stale_requests(store: Store) -> None:
    scope = TaskScope("etl", "run_1", "a")
    other = TaskScope("etl", "run_1", "b")
    await store.task_store("etl", "run_1", "a", try_number=2).set("seed", 1)  # version 1, try 2
    requests = [
        AppendRequest(scope=scope, ops=[set_op("x", 1)], try_number=2, expected_version=1),
        AppendRequest(scope=scope, ops=[set_op("y", 1)], expected_version=1),  # now stale
        AppendRequest(scope=scope, ops=[set_op("z", 1)], try_number=1),  # stale try
        AppendRequest(scope=other, ops=[set_op("x", 2)], try_number=1),
        AppendRequest(scope=scope, ops=[DeleteOp("seed")], expected_version=2),
    ]
    before = [row async for row in store.backend.select_all_events()]

    results = await append_batch(store.backend, requests, store.config, store.now())

    assert [type(r) for r in results] == [
        AppendResult,
        ConcurrencyError,
        StaleAttemptError,
        AppendResult,
        AppendResult,
    ]
    assert [r.version for r in results if isinstance(r, AppendResult)] == [2, 1, 3]
    assert await store.task_store("etl", "run_1", "a").items() == {"x": 1}
    assert await store.task_store("etl", "run_1", "b").items() == {"x": 2}
    appended = [row async for row in store.backend.select_all_events()][len(before) :]
    assert [(e.kind, e.key) for e in appended] == [("set", "x"), ("set", "x"), ("delete", "seed")]
    assert (await store.verify()).ok


async def test_concurrent_appends_fail_only_the_stale_ones(store: Store) -> None:
    a = store.task_store("etl", "run_1", "a", try_number=2)
    await a.set("seed", 1)
    stale_try = store.task_store("etl", "run_1", "a", try_number=1)
    b = store.task_store("etl", "run_1", "b")

    results = await asyncio.gather(
        a.set("x", 1, expected_version=1),
        b.set("x", 1),
        a.set("y", 1, expected_version=0),
        stale_try.set("z", 1),
        b.set("y", 2),
        return_exceptions=True,
    )

    assert [type(r) for r in results] == [
        AppendResult,
        AppendResult,
        ConcurrencyError,
        StaleAttemptError,
        AppendResult,
    ]
    assert await a.items() == {"seed": 1, "x": 1}
    assert await b.items() == {"x": 1, "y": 2}
    assert (await store.verify()).ok


@pytest.mark.parametrize("writers", [2, 50])
async def test_concurrent_expected_version_writers_lose_cleanly(store: Store, writers: int) -> None:
    ts = store.task_store("etl", "run_1", "cas")

    async def increment() -> int:
        """Compare-and-set loop: read, write with the version read, retry on conflict."""
        attempts = 0
        while True:
            attempts += 1
            version = await ts.version()
            current = await ts.get("n", 0)
            try:
                await ts.set("n", current + 1, expected_version=version)
            except ConcurrencyError:
                continue
            return attempts

    await asyncio.gather(*(increment() for _ in range(writers)))
    assert await ts.get("n") == writers
    assert await ts.version() == writers


@pytest.mark.parametrize("backend_url", ["sqlite"], indirect=True)
async def test_two_stores_on_one_sqlite_file_share_one_log(make_store: StoreFactory) -> None:
    async with make_store() as first, make_store() as second:
        a = first.task_store("etl", "run_1", "ingest", try_number=1)
        b = second.task_store("etl", "run_1", "ingest", try_number=1)

        async def writer(accessor: TaskStore, name: str) -> None:
            for i in range(20):
                await accessor.set(f"{name}-{i}", i)

        await asyncio.gather(writer(a, "a"), writer(b, "b"))
        assert await a.version() == await b.version() == 40
        assert await a.items() == await b.items()
        events = [row async for row in first.backend.select_all_events()]
        assert [e.seq for e in events] == list(range(1, 41))
        assert sorted(e.version for e in events) == list(range(1, 41))
        # A newer try through one store fences the other store's writers too.
        await second.task_store("etl", "run_1", "ingest", try_number=2).set("x", 1)
        with pytest.raises(StaleAttemptError):
            await a.set("x", 0)
        assert (await first.verify()).ok
