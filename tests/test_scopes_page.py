"""Listing scopes most recently written first: the backend primitive behind GET /api/v1/scopes."""

from __future__ import annotations

from datetime import timedelta

from conftest import FakeClock

from eventstore.log.backends.rows import ScopeFilter
from eventstore.log.events import to_micros
from eventstore.log.scopes import scope_from_key
from eventstore.store import Store


async def _seed(store: Store, clock: FakeClock) -> None:
    for run, task in [("r1", "a"), ("r1", "b"), ("r2", "a")]:
        await store.task_store("dag1", run, task, try_number=1).set("k", 1)
        clock.advance(timedelta(seconds=10))
    await store.asset_store(name="orders").set("watermark", 1)
    clock.advance(timedelta(seconds=10))
    await store.task_store("dag2", "r1", "a", map_index=3).set("k", 1)
    clock.advance(timedelta(seconds=10))
    # Writing again moves a scope to the front.
    await store.task_store("dag1", "r1", "a", try_number=2).set("k", 2)


def _names(rows: list) -> list[str]:  # type: ignore[type-arg]
    return [str(scope_from_key(r.scope_key)) for r in rows]


async def test_scopes_list_most_recently_written_first(store: Store, clock: FakeClock) -> None:
    await _seed(store, clock)
    rows = await store.recent_scopes(ScopeFilter())
    assert _names(rows) == [
        "task dag1/r1/a",
        "task dag2/r1/a[3]",
        "asset name=orders",
        "task dag1/r2/a",
        "task dag1/r1/b",
    ]
    assert rows[0].version == 2
    assert rows[0].max_try == 2


async def test_scopes_filter_by_kind_dag_run_and_task(store: Store, clock: FakeClock) -> None:
    await _seed(store, clock)
    assert _names(await store.recent_scopes(ScopeFilter(kind="asset"))) == ["asset name=orders"]
    assert len(await store.recent_scopes(ScopeFilter(kind="task"))) == 4
    assert _names(await store.recent_scopes(ScopeFilter(dag_id="dag1", task_id="a"))) == [
        "task dag1/r1/a",
        "task dag1/r2/a",
    ]
    assert _names(await store.recent_scopes(ScopeFilter(run_id="r2"))) == ["task dag1/r2/a"]
    assert await store.recent_scopes(ScopeFilter(dag_id="nope")) == []


async def test_scopes_filter_by_time_of_last_write(store: Store, clock: FakeClock) -> None:
    start = to_micros(clock.now)
    await _seed(store, clock)
    ten = 10_000_000
    rows = await store.recent_scopes(ScopeFilter(since=start + 2 * ten, until=start + 4 * ten))
    assert _names(rows) == ["task dag2/r1/a[3]", "asset name=orders", "task dag1/r2/a"]


async def test_scopes_page_through_with_the_cursor_of_the_last_row(
    store: Store, clock: FakeClock
) -> None:
    # Scopes written in one commit share a time; the scope id breaks the tie.
    await store.task_store("d", "r", "t").set_many({"a": 1})
    for n in range(7):
        await store.asset_store(name=f"asset-{n}").set("k", n)
    seen: list[str] = []
    before = None
    while True:
        page = await store.recent_scopes(ScopeFilter(before=before, limit=3))
        seen += _names(page)
        if len(page) < 3:
            break
        before = (page[-1].updated_at, page[-1].scope_id)
    assert len(seen) == 8
    assert len(set(seen)) == 8
    assert seen == _names(await store.recent_scopes(ScopeFilter(limit=100)))
