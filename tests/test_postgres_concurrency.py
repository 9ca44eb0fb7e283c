"""Several OS processes writing to one PostgreSQL database at once.

Each writer is its own process with its own store (pool, group-commit writer), as replicas are.
They are started together and race on the same task instances; the test then reads the whole log
back and checks what must hold across processes: no two writers win one version, versions are
gapless, a stale try never lands after a newer try wrote, an idempotency id is appended once, a
clear of every map index is one atomic step, and a reader tailing the log while they ran saw every
event exactly once, in position order.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import queue
import random
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import anyio
import pytest
from conftest import postgres_schema_url
from tailing import Tailer, assert_tailer_saw_everything_once

from eventstore import ConcurrencyError, StaleAttemptError, TaskScope, open_store
from eventstore.log.backends.base import LogBackend
from eventstore.log.backends.rows import EventRow
from eventstore.log.scopes import scope_from_key

pytestmark = pytest.mark.slow

DAG, RUN, TASK = "etl", "run_1", "load"


@pytest.fixture
def pg_url() -> Iterator[str]:
    with postgres_schema_url() as url:
        yield url


# --- the writers: each runs in a process of its own --------------------------------------------


def _process_main(
    target: str, args: tuple[Any, ...], ready: Any, start: Any, results: Any, name: str
) -> None:
    try:
        outcome = asyncio.run(globals()[target](*args, ready=ready, start=start))
    except BaseException as error:  # report it, so the test fails with the reason
        results.put((name, f"{type(error).__name__}: {error}"))
        raise
    results.put((name, outcome))


async def _started(url: str, ready: Any, start: Any) -> Any:
    """Open the store, say so, and wait for the go of every other writer."""
    manager = open_store(url)
    store = await manager.__aenter__()
    ready.put(1)
    await asyncio.to_thread(start.wait)
    return manager, store


async def write_with_expected_versions(
    url: str, writer: int, writes: int, map_indices: int, *, ready: Any, start: Any
) -> dict[str, Any]:
    """Read the version, write with it as the expected version; on a conflict read again."""
    manager, store = await _started(url, ready, start)
    acked: list[tuple[int, int, int, int]] = []  # map_index, version, seq, value
    conflicts = 0
    try:
        for i in range(writes):
            map_index = i % map_indices
            ts = store.task_store(DAG, RUN, TASK, map_index=map_index)
            while True:
                version = await ts.version()
                try:
                    result = await ts.set(f"w{writer}", i, expected_version=version)
                except ConcurrencyError:
                    conflicts += 1
                    continue
                assert result.seq is not None
                acked.append((map_index, result.version, result.seq, i))
                break
    finally:
        await manager.__aexit__(None, None, None)
    return {"acked": acked, "conflicts": conflicts}


async def write_as_try(
    url: str, try_number: int, writes: int, *, ready: Any, start: Any
) -> dict[str, Any]:
    """Write as one try of the task, as fast as possible, counting stale refusals."""
    manager, store = await _started(url, ready, start)
    ts = store.task_store(DAG, RUN, TASK, try_number=try_number)
    acked: list[int] = []
    stale = 0
    try:
        for i in range(writes):
            try:
                result = await ts.set(f"try{try_number}", i)
            except StaleAttemptError:
                stale += 1
                continue
            assert result.seq is not None
            acked.append(result.seq)
    finally:
        await manager.__aexit__(None, None, None)
    return {"acked": acked, "stale": stale}


async def write_idempotently(
    url: str, writer: int, ids: list[str], *, ready: Any, start: Any
) -> dict[str, tuple[int, int | None, int]]:
    """Append every id once with it as the idempotency id, in an order of this writer's own."""
    manager, store = await _started(url, ready, start)
    order = list(ids)
    random.Random(writer).shuffle(order)
    answers: dict[str, tuple[int, int | None, int]] = {}
    try:
        ts = store.task_store(DAG, RUN, TASK, try_number=1)
        for idempotency_id in order:
            result = await ts.set(idempotency_id, writer, idempotency_id=idempotency_id)
            answers[idempotency_id] = (result.version, result.seq, result.events)
    finally:
        await manager.__aexit__(None, None, None)
    return answers


async def write_map_index(url: str, map_index: int, writes: int, *, ready: Any, start: Any) -> int:
    manager, store = await _started(url, ready, start)
    try:
        ts = store.task_store(DAG, RUN, TASK, map_index=map_index)
        for i in range(writes):
            await ts.set_many({f"k{i % 3}": i, "last": i})
    finally:
        await manager.__aexit__(None, None, None)
    return writes


async def clear_every_map_index(url: str, clears: int, *, ready: Any, start: Any) -> int:
    manager, store = await _started(url, ready, start)
    try:
        ts = store.task_store(DAG, RUN, TASK, map_index=0, actor="api:clearer")
        for _ in range(clears):
            # Clear when there is something to clear, unless the writers are done.
            for _ in range(200):
                if await ts.items():
                    break
                await asyncio.sleep(0.01)
            await ts.clear(all_map_indices=True)
            await asyncio.sleep(0.005)
    finally:
        await manager.__aexit__(None, None, None)
    return clears


# --- running them ------------------------------------------------------------------------------


async def run_processes(
    url: str,
    writers: dict[str, tuple[str, tuple[Any, ...]]],
    during: Callable[[anyio.Event], Awaitable[None]] | None = None,
) -> dict[str, Any]:
    """Start every writer process, release them at once, and collect what each returns.

    `during` runs in this process while they write, until the event it gets is set.
    """
    context = multiprocessing.get_context("spawn")
    ready = context.Queue()
    results = context.Queue()
    start = context.Event()
    processes = [
        context.Process(
            target=_process_main,
            args=(target, args, ready, start, results, name),
            name=name,
        )
        for name, (target, args) in writers.items()
    ]
    for process in processes:
        process.start()
    collected: dict[str, Any] = {}
    try:
        for _ in processes:
            await anyio.to_thread.run_sync(lambda: ready.get(timeout=120))
        finished = anyio.Event()
        async with anyio.create_task_group() as tg:
            if during is not None:
                tg.start_soon(during, finished)
            start.set()
            while len(collected) < len(processes):
                try:
                    name, outcome = await anyio.to_thread.run_sync(lambda: results.get(timeout=1))
                except queue.Empty:
                    dead = [p for p in processes if p.exitcode not in (None, 0)]
                    assert not dead, f"writer processes failed: {dead}"
                    continue
                assert not isinstance(outcome, str), f"{name} failed: {outcome}"
                collected[name] = outcome
            finished.set()
    finally:
        for process in processes:
            await anyio.to_thread.run_sync(process.join, 60)
            if process.is_alive():
                process.kill()
    assert all(p.exitcode == 0 for p in processes), [p.exitcode for p in processes]
    return collected


async def whole_log(backend: LogBackend) -> list[EventRow]:
    return [row async for row in backend.select_all_events()]


async def map_index_of(backend: LogBackend) -> dict[int, int]:
    found = {}
    for row in await backend.select_scopes():
        scope = scope_from_key(row.scope_key)
        assert isinstance(scope, TaskScope)
        found[row.scope_id] = scope.map_index
    return found


# --- the tests ---------------------------------------------------------------------------------


async def test_writers_in_several_processes_never_win_the_same_version(pg_url: str) -> None:
    writers, writes, map_indices = 4, 30, 2
    async with open_store(pg_url) as store:
        tailer = Tailer(store.backend)
        outcomes = await run_processes(
            pg_url,
            {
                f"writer{w}": ("write_with_expected_versions", (pg_url, w, writes, map_indices))
                for w in range(writers)
            },
            during=tailer,
        )
        await tailer.catch_up()
        log = await whole_log(store.backend)
        maps = await map_index_of(store.backend)
        report = await store.verify()

    assert report.ok, report.mismatches
    acked = [a for outcome in outcomes.values() for a in outcome["acked"]]
    assert len(acked) == writers * writes, "every write was eventually acknowledged"
    won = Counter((map_index, version) for map_index, version, _, _ in acked)
    assert max(won.values()) == 1, "two writers won the same version"
    by_scope: dict[int, list[EventRow]] = defaultdict(list)
    for row in log:
        by_scope[maps[row.scope_id]].append(row)
    for map_index, rows in by_scope.items():
        assert [r.version for r in rows] == list(range(1, len(rows) + 1)), map_index
    assert sum(len(rows) for rows in by_scope.values()) == len(acked)
    at = {(maps[r.scope_id], r.version): r for r in log}
    for map_index, version, seq, _value in acked:
        assert at[(map_index, version)].seq == seq, "an acknowledged write is not in the log"
    assert_tailer_saw_everything_once(tailer, log)


async def test_a_stale_try_never_lands_after_a_newer_try_wrote(pg_url: str) -> None:
    writes = 40
    async with open_store(pg_url) as store:
        tailer = Tailer(store.backend)
        outcomes = await run_processes(
            pg_url,
            {
                "try1a": ("write_as_try", (pg_url, 1, writes)),
                "try1b": ("write_as_try", (pg_url, 1, writes)),
                "try2": ("write_as_try", (pg_url, 2, writes)),
                "try3": ("write_as_try", (pg_url, 3, writes)),
            },
            during=tailer,
        )
        await tailer.catch_up()
        log = await whole_log(store.backend)
        report = await store.verify()
        head = await store.backend.select_scope((await store.backend.select_scopes())[0].scope_key)

    assert report.ok
    tries = [row.try_number for row in log]
    assert tries == sorted(tries), "a lower try wrote after a higher try had written"
    assert tries[-1] == 3
    assert head is not None
    assert head.max_try == 3
    for name, outcome in outcomes.items():
        try_number = int(name[3])
        assert outcome["stale"] + len(outcome["acked"]) == writes
        landed = {row.seq for row in log if row.try_number == try_number}
        assert set(outcome["acked"]) <= landed, f"an acknowledged write of {name} is missing"
    assert outcomes["try3"]["stale"] == 0
    assert len(log) == sum(len(o["acked"]) for o in outcomes.values())
    assert_tailer_saw_everything_once(tailer, log)


async def test_an_idempotency_id_is_appended_once_across_processes(pg_url: str) -> None:
    ids = [f"op-{i}" for i in range(25)]
    async with open_store(pg_url) as store:
        tailer = Tailer(store.backend)
        outcomes = await run_processes(
            pg_url,
            {f"writer{w}": ("write_idempotently", (pg_url, w, ids)) for w in range(3)},
            during=tailer,
        )
        await tailer.catch_up()
        log = await whole_log(store.backend)
        assert (await store.verify()).ok
    assert_tailer_saw_everything_once(tailer, log)
    assert len(log) == len(ids), "a retried idempotency id appended again"
    assert sorted(row.key for row in log if row.key) == sorted(ids)
    first, *others = outcomes.values()
    for other in others:
        assert other == first, "processes got different results for the same idempotency id"
    by_key = {row.key: row for row in log}
    for idempotency_id, (version, seq, events) in first.items():
        assert (by_key[idempotency_id].version, by_key[idempotency_id].seq) == (version, seq)
        assert events == 1


async def test_clearing_every_map_index_is_one_atomic_step(pg_url: str) -> None:
    map_indices, writes, clears = 3, 40, 15
    writers: dict[str, tuple[str, tuple[Any, ...]]] = {
        f"map{m}": ("write_map_index", (pg_url, m, writes)) for m in range(map_indices)
    }
    writers["clearer"] = ("clear_every_map_index", (pg_url, clears))
    async with open_store(pg_url) as store:
        tailer = Tailer(store.backend)
        await run_processes(pg_url, writers, during=tailer)
        await tailer.catch_up()
        log = await whole_log(store.backend)
        maps = await map_index_of(store.backend)
        assert (await store.verify()).ok

    live: dict[int, set[str]] = defaultdict(set)
    runs = 0
    for i, row in enumerate(log):
        match row.kind:
            case "set":
                live[maps[row.scope_id]].add(row.key or "")
            case "clear":
                assert row.actor == "api:clearer"
                live[maps[row.scope_id]].clear()
        clearing = row.kind == "clear"
        run_ends = clearing and (i + 1 == len(log) or log[i + 1].kind != "clear")
        if run_ends:
            runs += 1
            # One clear's events are consecutive and leave every map index empty at once.
            assert not any(live.values()), f"map indices still live after seq {row.seq}: {live}"
    assert runs > 0, "the clearer should have cleared something"
    assert sum(1 for row in log if row.kind == "set") == map_indices * writes * 2
    assert_tailer_saw_everything_once(tailer, log)
