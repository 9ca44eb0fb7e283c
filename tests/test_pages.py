"""Pages by keyset, on every backend: the projection listed after a key and the history after a
position give exactly the rows a full read would, page after page, whatever was written,
deleted, cleared or expired in between."""

from __future__ import annotations

from datetime import timedelta

from conftest import FakeClock

from eventstore import NEVER_EXPIRE, Store
from eventstore.log.scopes import TaskScope


async def _listing(store: Store, scope: TaskScope, limit: int) -> list[str]:
    keys: list[str] = []
    after = None
    while True:
        page = await store.read_page(scope, after=after, limit=limit)
        keys += [row.key for row in page]
        if len(page) < limit:
            return keys
        after = page[-1].key


async def test_pages_after_a_key_list_every_live_key_once_in_order(
    store: Store, clock: FakeClock
) -> None:
    ts = store.task_store("d", "r", "t")
    scope = TaskScope("d", "r", "t")
    keys = [f"k{i:03d}" for i in range(0, 300, 3)] + ["é", "a/b", "Z", "z" * 512, "💡"]
    await ts.set_many(dict.fromkeys(keys, 1), retention=NEVER_EXPIRE)
    await ts.set_many({f"short{i}": i for i in range(40)}, retention=timedelta(seconds=5))
    await ts.delete("k003")
    await ts.set("k004", "between")
    clock.advance(timedelta(seconds=10))  # the short-lived keys expire, uncompacted
    expected = sorted({*keys, "k004"} - {"k003"})
    for limit in (1, 7, 1000):
        assert await _listing(store, scope, limit) == expected
    assert [r.key for r in await store.read_all(scope)] == expected


async def test_pages_start_afresh_after_a_clear(store: Store) -> None:
    ts = store.task_store("d", "r", "t")
    scope = TaskScope("d", "r", "t")
    await ts.set_many({f"k{i}": i for i in range(50)})
    assert len(await _listing(store, scope, 10)) == 50
    await ts.clear()
    await ts.set_many({"b": 1, "a": 2})
    assert await _listing(store, scope, 10) == ["a", "b"]


async def test_history_pages_after_a_position_give_every_event_once(store: Store) -> None:
    ts = store.task_store("d", "r", "t")
    other = store.task_store("d", "r", "other")
    for i in range(30):
        await ts.set(f"k{i % 4}", i)
        await other.set("x", i)  # positions of another scope interleave
    history = store.history(TaskScope("d", "r", "t"))
    everything = await history.events()
    seen: list[int] = []
    after = None
    while True:
        page = await history.events(after_seq=after, limit=4)
        seen += [e.seq for e in page]
        if len(page) < 4:
            break
        after = page[-1].seq
    assert seen == [e.seq for e in everything]
    # A cursor that is a position of another scope bounds by position alone.
    foreign = (await store.history(TaskScope("d", "r", "other")).events())[10].seq
    assert [e.seq for e in await history.events(after_seq=foreign)] == [
        e.seq for e in everything if e.seq > foreign
    ]
