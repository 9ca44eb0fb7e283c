"""The sensitive flag of a key sticks: a write that does not say `sensitive` keeps it, only
`sensitive=False` clears it (an event history shows), and a delete or clear ends the key with
its flag. On every backend, through the library."""

from __future__ import annotations

from eventstore import Store
from eventstore.log.envelope import MASKED
from eventstore.log.events import RecordedEvent
from eventstore.log.scopes import TaskScope
from projections import At


def _flags(events: list[RecordedEvent]) -> list[tuple[object, bool, bool]]:
    return [(e.value, e.sensitive, e.sensitive_cleared) for e in events if e.kind == "set"]


async def test_set_without_sensitive_keeps_the_keys_flag(store: Store) -> None:
    ts = store.task_store("d", "r", "t", try_number=1)
    await ts.set("pw", "SECRET-1", sensitive=True)
    await ts.set("pw", "SECRET-2")
    await ts.set_many({"pw": "SECRET-3", "other": 1})
    timeline = await store.history(TaskScope("d", "r", "t")).timeline("pw")
    assert _flags(timeline) == [
        ("SECRET-1", True, False),
        ("SECRET-2", True, False),
        ("SECRET-3", True, False),
    ]
    state = await store.history(TaskScope("d", "r", "t")).state(At.version(4), mask=True)
    assert state == {"other": 1, "pw": MASKED}


async def test_only_sensitive_false_clears_the_flag_and_history_records_it(store: Store) -> None:
    ts = store.task_store("d", "r", "t")
    await ts.set("pw", "SECRET-1", sensitive=True)
    await ts.set("pw", "public", sensitive=False)
    await ts.set("pw", "public-2")
    events = await store.history(TaskScope("d", "r", "t")).events(mask=True)
    assert _flags(events) == [
        (None, True, False),
        ("public", False, True),
        ("public-2", False, False),
    ]


async def test_flag_set_earlier_in_the_same_batch_is_kept(store: Store) -> None:
    ts = store.task_store("d", "r", "t")
    await ts.set_many({"pw": "SECRET-1"}, sensitive=True)
    await ts.set_many({"pw": "SECRET-2", "new": "n"})
    items = await store.history(TaskScope("d", "r", "t")).events(kinds=["set"], mask=True)
    assert [(e.key, e.value) for e in items] == [("pw", None), ("pw", None), ("new", "n")]


async def test_delete_ends_the_key_and_its_flag(store: Store) -> None:
    ts = store.task_store("d", "r", "t")
    await ts.set("pw", "SECRET-1", sensitive=True)
    await ts.delete("pw")
    await ts.set("pw", "fresh")
    events = await store.history(TaskScope("d", "r", "t")).timeline("pw", mask=True)
    assert [(e.kind, e.value, e.sensitive) for e in events] == [
        ("set", None, True),
        ("delete", None, False),
        ("set", "fresh", False),
    ]


async def test_clear_ends_every_flag_of_the_scope(store: Store) -> None:
    ts = store.task_store("d", "r", "t")
    await ts.set("pw", "SECRET-1", sensitive=True)
    await ts.clear()
    await ts.set("pw", "fresh")
    events = await store.history(TaskScope("d", "r", "t")).timeline("pw", mask=True)
    assert _flags(events) == [(None, True, False), ("fresh", False, False)]
