"""Every backend behaves exactly like the in-memory reference: same events, same projection.

The same script of writes runs against `memory://` and against the backend under test; the logs
must agree row for row (positions, versions, times, tries, payload bytes) and so must the
projections and every read the store answers.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import FakeClock, StoreFactory, postgres_schema_url, require_postgres_url
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore import (
    NEVER_EXPIRE,
    ConcurrencyError,
    StaleAttemptError,
    Store,
    StoreConfig,
    open_store,
)
from eventstore.log.backends.rows import EventFilter

KEYS = st.sampled_from(["a", "b", "job/id", "ключ", "nul\x00key", "z" * 512])
VALUES = st.one_of(
    st.integers(-(2**53), 2**53),
    st.text(max_size=20),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.booleans(), max_size=3),
)
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("set"), st.integers(0, 2), st.integers(1, 3), KEYS, VALUES),
        st.tuples(st.just("set_short"), st.integers(0, 2), st.integers(1, 3), KEYS, VALUES),
        st.tuples(st.just("delete"), st.integers(0, 2), st.integers(1, 3), KEYS),
        st.tuples(st.just("clear"), st.integers(0, 2), st.integers(1, 3)),
        st.tuples(st.just("clear_all"), st.integers(0, 2), st.integers(1, 3)),
        st.tuples(st.just("tick"), st.integers(1, 90)),
        st.tuples(st.just("asset"), KEYS, VALUES),
    ),
    max_size=25,
)


async def run_script(store: Store, clock: FakeClock, ops: list[tuple[Any, ...]]) -> list[Any]:
    """Apply the script; returns what each step answered (results or error types)."""
    answers: list[Any] = []
    for op in ops:
        kind = op[0]
        if kind == "tick":
            clock.advance(timedelta(minutes=op[1]))
            answers.append(None)
            continue
        if kind == "asset":
            result = await store.asset_store(name="orders").set(op[1], op[2])
            answers.append((result.version, result.seq, result.events))
            continue
        ts = store.task_store("dag", "run", "task", map_index=op[1], try_number=op[2])
        try:
            match kind:
                case "set":
                    result = await ts.set(op[3], op[4], retention=NEVER_EXPIRE)
                case "set_short":
                    result = await ts.set(op[3], op[4], retention=timedelta(minutes=30))
                case "delete":
                    result = await ts.delete(op[3])
                case "clear":
                    result = await ts.clear()
                case _:
                    result = await ts.clear(all_map_indices=True)
        except (StaleAttemptError, ConcurrencyError) as error:
            answers.append(type(error).__name__)
        else:
            answers.append((result.version, result.seq, result.events))
    return answers


async def snapshot(store: Store) -> dict[str, Any]:
    """Everything a reader can see, with backend-specific scope ids replaced by scope keys."""
    backend = store.backend
    scopes = {row.scope_id: row for row in await backend.select_scopes()}
    events = [
        (scopes[row.scope_id].scope_key, *_fields(row))
        async for row in backend.select_all_events(batch=7)
    ]
    current = sorted(
        (scopes[row.scope_id].scope_key, row.key, row.value, row.expires_at, row.version, row.seq)
        for row in await backend.select_current()
    )
    heads = sorted(
        (row.scope_key, row.version, row.max_try, row.updated_at, row.map_index)
        for row in scopes.values()
    )
    items = {}
    for map_index in range(3):
        ts = store.task_store("dag", "run", "task", map_index=map_index)
        items[map_index] = (await ts.items(), await ts.version())
    per_scope = {
        row.scope_key: [
            _fields(e)
            for e in await backend.select_events(row.scope_id, EventFilter(descending=True))
        ]
        for row in scopes.values()
    }
    return {
        "events": events,
        "current": current,
        "heads": heads,
        "items": items,
        "per_scope": per_scope,
    }


def _fields(row: Any) -> tuple[Any, ...]:
    return (
        row.seq,
        row.version,
        row.kind,
        row.key,
        row.expires_at,
        row.recorded_at,
        row.try_number,
        row.actor,
        row.payload,
    )


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=OPS)
async def test_backend_writes_the_same_log_as_the_reference(
    database: str, tmp_path: Path, ops: list[tuple[Any, ...]]
) -> None:
    reference_clock = FakeClock()
    clock = FakeClock()
    config = StoreConfig(default_retention_days=1)
    async with open_store("memory://", config=config, clock=reference_clock) as reference:
        expected_answers = await run_script(reference, reference_clock, ops)
        expected = await snapshot(reference)
    with fresh_url(database, tmp_path) as url:
        async with open_store(url, config=config, clock=clock) as store:
            assert await run_script(store, clock, ops) == expected_answers
            assert await snapshot(store) == expected
            assert (await store.verify()).ok


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest) -> str:
    """A database backend, compared with the in-memory reference."""
    if request.param == "postgres":
        require_postgres_url()
    return str(request.param)


@contextmanager
def fresh_url(kind: str, tmp_path: Path) -> Iterator[str]:
    """A new empty store of one database backend, for one hypothesis example."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / uuid.uuid4().hex}.db"
    else:
        with postgres_schema_url() as url:
            yield url


async def test_backend_matches_reference_on_one_script(backend_url: str, clock: FakeClock) -> None:
    ops: list[tuple[Any, ...]] = [
        ("set", 0, 1, "a", 1),
        ("set_short", 1, 1, "b", {"x": [1, 2]}),
        ("set", 2, 1, "nul\x00key", "v"),
        ("tick", 10),
        ("set", 0, 2, "job/id", "spark-1"),
        ("set", 0, 1, "a", 2),  # stale: try 2 has written
        ("delete", 0, 2, "missing"),  # no-op
        ("delete", 0, 2, "a"),
        ("tick", 40),  # b expires
        ("clear", 1, 1),  # b is expired: nothing to clear
        ("clear_all", 2, 1),
        ("asset", "ключ", [1, None]),
        ("set", 1, 3, "z" * 512, True),
    ]
    reference_clock = FakeClock()
    async with open_store("memory://", clock=reference_clock) as reference:
        expected_answers = await run_script(reference, reference_clock, ops)
        expected = await snapshot(reference)
    async with open_store(backend_url, clock=clock) as store:
        assert await run_script(store, clock, ops) == expected_answers
        assert await snapshot(store) == expected
        assert (await store.verify()).ok
        assert await store.rebuild() == len(expected["current"])
        assert await snapshot(store) == expected


async def test_event_filters_select_the_same_rows(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    async with make_store() as store:
        for try_number in (1, 2):
            ts = store.task_store("d", "r", "t", try_number=try_number)
            for i in range(3):
                await ts.set("k", i)
                await ts.set(f"other{i}", i)
                clock.advance(timedelta(seconds=10))
            await ts.delete("other0")
        scope_id = await store.backend.select_scope(_task_key("d", "r", "t"))
        assert scope_id is not None
        sid = scope_id.scope_id
        select = store.backend.select_events
        everything = await select(sid, EventFilter())
        assert [e.version for e in everything] == list(range(1, 15))
        assert [e.seq for e in everything] == sorted(e.seq for e in everything)
        assert [e.version for e in await select(sid, EventFilter(key="k"))] == [1, 3, 5, 8, 10, 12]
        assert [e.kind for e in await select(sid, EventFilter(kinds=frozenset({"delete"})))] == [
            "delete",
            "delete",
        ]
        assert {e.try_number for e in await select(sid, EventFilter(try_number=2))} == {2}
        first = everything[0].recorded_at
        window = await select(sid, EventFilter(since=first + 10_000_000, until=first + 20_000_000))
        assert [e.version for e in window] == [3, 4, 5, 6]
        tail = await select(sid, EventFilter(after_seq=everything[9].seq, limit=2))
        assert [e.version for e in tail] == [11, 12]
        head = await select(
            sid, EventFilter(through_seq=everything[3].seq, descending=True, limit=3)
        )
        assert [e.version for e in head] == [4, 3, 2]
        both = await select(sid, EventFilter(key="k", try_number=1, descending=True))
        assert [e.version for e in both] == [5, 3, 1]


async def test_a_reopened_store_keeps_every_event(make_store: StoreFactory) -> None:
    async with make_store() as store:
        ts = store.task_store("d", "r", "t", try_number=1)
        await ts.set_many({"a": 1, "b": 2})
        await ts.delete("a")
    if store.backend.__class__.__name__ == "MemoryBackend":
        return  # memory:// keeps nothing across opens, by design
    async with make_store() as store:
        ts = store.task_store("d", "r", "t", try_number=1)
        assert await ts.items() == {"b": 2}
        assert await ts.version() == 3
        with pytest.raises(StaleAttemptError, match="try 0 of task d/r/t cannot write"):
            await store.task_store("d", "r", "t", try_number=0).set("a", 1)
        result = await ts.set("c", 3, expected_version=3, idempotency_id="once")
        again = await ts.set("c", 4, expected_version=3, idempotency_id="once")
        assert again == result
        with pytest.raises(ConcurrencyError, match="is at version 4, the write expected 3"):
            await ts.set("c", 4, expected_version=3)
        assert [e.seq async for e in store.backend.select_all_events(after_seq=2, batch=1)] == [
            3,
            4,
        ]


def _task_key(dag_id: str, run_id: str, task_id: str) -> str:
    from eventstore.log.scopes import TaskScope, scope_key

    return scope_key(TaskScope(dag_id, run_id, task_id))
