"""The backend interface, tested directly and alike on every backend: what goes in through a
write transaction comes back out of the selects, ranges bound exactly where they say, the
compaction primitives touch only what they name, and a closed backend refuses work."""

from __future__ import annotations

import pytest

from eventstore.log.backends import LogBackend
from eventstore.log.backends.rows import (
    EVERY_ROW,
    CurrentFilter,
    CurrentRow,
    EventFilter,
    EventRow,
    IdempotentRow,
    Insert,
    LogHead,
    ScopeFilter,
    ScopeRow,
)
from eventstore.log.errors import StoreClosedError


def _event(seq: int, scope_id: int, version: int, key: str | None, kind: str = "set") -> EventRow:
    payload = f"p{seq}".encode()
    return EventRow(seq, scope_id, version, kind, key, None, 1_000 + seq, None, "test", payload)


def _current(scope_id: int, key: str, seq: int, expires_at: int | None = None) -> CurrentRow:
    value = b"\x00\x01" + key.encode()
    return CurrentRow(scope_id, key, value, expires_at, seq, seq, 1_000 + seq)


async def _two_scopes(log: LogBackend) -> tuple[int, int]:
    """An asset scope and a task scope, the task one written later."""
    async with log.write() as tx:
        asset, task = await tx.insert(
            Insert(
                scopes=[
                    ScopeRow(scope_id=0, scope_key="asset:a"),
                    ScopeRow(
                        scope_id=0, scope_key="task:d/r/t/-1", dag_id="d", run_id="r", task_id="t"
                    ),
                ]
            )
        )
        updated = await tx.insert(
            Insert(
                scopes=[
                    ScopeRow(scope_id=asset, scope_key="asset:a", version=2, updated_at=10),
                    ScopeRow(scope_id=task, scope_key="task:d/r/t/-1", version=1, updated_at=20),
                ]
            )
        )
        assert updated == []  # no new scope among them
    return asset, task


async def test_scopes_round_trip_and_filters(log: LogBackend) -> None:
    asset, task = await _two_scopes(log)
    assert asset != task
    every = await log.select_scopes()
    assert [r.scope_id for r in every] == sorted([asset, task])
    assert [(r.version, r.updated_at) for r in every] == [(2, 10), (1, 20)]
    newest_first = await log.select_scopes(ScopeFilter())
    assert [r.scope_id for r in newest_first] == [task, asset]
    assert [r.scope_id for r in await log.select_scopes(ScopeFilter(kind="task"))] == [task]
    assert [r.scope_id for r in await log.select_scopes(ScopeFilter(kind="asset"))] == [asset]
    assert [r.scope_id for r in await log.select_scopes(ScopeFilter(dag_id="d"))] == [task]
    assert [r.scope_id for r in await log.select_scopes(ScopeFilter(since=11))] == [task]
    assert [r.scope_id for r in await log.select_scopes(ScopeFilter(until=10))] == [asset]
    after_task = ScopeFilter(before=(20, task))
    assert [r.scope_id for r in await log.select_scopes(after_task)] == [asset]
    assert [r.scope_id for r in await log.select_scopes(ScopeFilter(limit=1))] == [task]
    assert len(await log.select_scopes(ScopeFilter(limit=None))) == 2
    one = await log.select_scopes(ScopeFilter(scope_key="task:d/r/t/-1"))
    assert [(r.scope_id, r.dag_id, r.run_id, r.task_id) for r in one] == [(task, "d", "r", "t")]
    assert await log.select_scopes(ScopeFilter(scope_key="task:d/r/t/-1", kind="asset")) == []
    assert await log.select_scopes(ScopeFilter(scope_key="asset:none")) == []
    found = await log.select_scope("asset:a")
    assert found is not None
    assert found.scope_id == asset
    assert await log.select_scope("asset:none") is None


async def test_transaction_reads_see_the_scopes(log: LogBackend) -> None:
    asset, task = await _two_scopes(log)
    async with log.write() as tx:
        _, found = await tx.select_head_and_scopes(["asset:a", "asset:none"])
        assert {k: r.scope_id for k, r in found.items()} == {"asset:a": asset}
        [mapped] = await tx.insert(
            Insert(
                scopes=[
                    ScopeRow(
                        scope_id=0, scope_key="task:d/r/t/0", dag_id="d", run_id="r", task_id="t"
                    )
                ]
            )
        )
        _, rows = await tx.select_head_and_scopes(task=("d", "r", "t"))
        assert sorted(r.scope_id for r in rows.values()) == sorted([task, mapped])
        _, both = await tx.select_head_and_scopes(["asset:a"], task=("d", "r", "t"))
        assert sorted(both) == ["asset:a", "task:d/r/t/-1", "task:d/r/t/0"]
        assert (await tx.select_head_and_scopes(task=("d", "r", "other")))[1] == {}
        head, scopes = await tx.select_head_and_scopes(["task:d/r/t/-1"])
        assert head == LogHead()
        assert scopes["task:d/r/t/-1"].scope_id == task


async def test_insert_hands_out_ids_to_new_scopes_and_updates_the_others(log: LogBackend) -> None:
    asset, task = await _two_scopes(log)
    async with log.write() as tx:
        new = await tx.insert(
            Insert(
                scopes=[
                    ScopeRow(scope_id=0, scope_key="asset:b"),
                    ScopeRow(scope_id=task, scope_key="task:d/r/t/-1", version=7, updated_at=30),
                    ScopeRow(scope_id=0, scope_key="asset:c"),
                ]
            )
        )
    assert len(new) == 2
    assert len({asset, task, *new}) == 4
    found = {r.scope_key: r for r in await log.select_scopes()}
    assert [found["asset:b"].scope_id, found["asset:c"].scope_id] == new
    updated = found["task:d/r/t/-1"]
    assert (updated.version, updated.updated_at) == (7, 30)
    assert updated.dag_id == "d"  # an update of the head leaves the scope's parts alone


async def test_events_after_a_position(log: LogBackend) -> None:
    asset, task = await _two_scopes(log)
    events = [_event(1, asset, 1, "k"), _event(2, task, 1, "k"), _event(3, asset, 2, "j")]
    async with log.write() as tx:
        await tx.insert(Insert(events=events, head=LogHead(last_seq=3, last_recorded_at=1_003)))
    assert await log.select_head() == LogHead(last_seq=3, last_recorded_at=1_003)
    async with log.write() as tx:
        head, _ = await tx.select_head_and_scopes()
        assert head == LogHead(last_seq=3, last_recorded_at=1_003)
    assert [e async for e in log.select_all_events()] == events
    assert [e async for e in log.select_all_events(after_seq=1, batch=1)] == events[1:]
    assert [e async for e in log.select_all_events(after_seq=3)] == []
    assert await log.select_events(asset, EventFilter()) == [events[0], events[2]]
    assert await log.select_events(asset, EventFilter(after_seq=1)) == [events[2]]
    assert await log.select_events(asset, EventFilter(key="k")) == [events[0]]


async def test_markers_and_latest_per_key(log: LogBackend) -> None:
    asset, task = await _two_scopes(log)
    events = [
        _event(1, asset, 1, "k"),
        _event(2, asset, 2, None, "clear"),
        _event(3, asset, 3, "k"),
        _event(4, asset, 4, "j"),
        _event(5, asset, 5, None, "erased"),
        _event(6, task, 1, None, "erased"),
        _event(7, asset, 6, "k"),
    ]
    async with log.write() as tx:
        await tx.insert(Insert(events=events))
    clear = await log.select_markers([asset], ["clear"])
    assert clear == {(asset, "clear"): events[1]}
    assert await log.select_markers([asset], ["clear"], through_seq=1) == {}
    assert await log.select_markers([task], ["clear"]) == {}
    latest = await log.select_latest_per_key(asset, after_seq=2, through_seq=6)
    assert sorted(latest, key=lambda e: e.seq) == [events[2], events[3]]
    erased = await log.select_markers([asset, task, 99], ["erased"])
    assert erased == {(asset, "erased"): events[4], (task, "erased"): events[5]}
    both = await log.select_markers([asset, task], ["clear", "erased"], through_seq=4)
    assert both == {(asset, "clear"): events[1]}
    assert await log.select_markers([], ["clear"]) == {}


async def _keys(log: LogBackend, scope_id: int, where: CurrentFilter = EVERY_ROW) -> str:
    return "".join(r.key for r in await log.select_current(scope_id, where))


async def test_current_by_key_range_and_expiry(log: LogBackend) -> None:
    asset, task = await _two_scopes(log)
    rows = [_current(asset, k, i + 1) for i, k in enumerate(["c", "a", "d"])]
    rows.append(_current(asset, "b", 4, expires_at=50))
    rows.append(_current(task, "a", 5))
    async with log.write() as tx:
        await tx.insert(Insert(current=rows))
    assert await _keys(log, asset) == "abcd"  # expired rows included, by key
    assert await _keys(log, asset, CurrentFilter(now=50)) == "acd"
    assert await _keys(log, asset, CurrentFilter(now=49)) == "abcd"
    assert await _keys(log, asset, CurrentFilter(after_key="a", limit=2)) == "bc"
    assert await _keys(log, asset, CurrentFilter(after_key="a", now=50)) == "cd"
    assert await _keys(log, asset, CurrentFilter(limit=1, now=50)) == "a"
    assert await _keys(log, asset, CurrentFilter(limit=0)) == ""
    assert await log.select_current(asset, CurrentFilter(key="b")) == [rows[3]]
    assert await log.select_current(asset, CurrentFilter(key="b", now=50)) == []
    assert await log.select_current(asset, CurrentFilter(key="zz")) == []
    every = await log.select_current()
    assert sorted(every, key=lambda r: (r.scope_id, r.key)) == sorted(
        rows, key=lambda r: (r.scope_id, r.key)
    )
    async with log.write() as tx:
        live = await tx.select_current_heads(scope_id=asset, now=50)
        assert live == {(asset, k): b"\x00\x01" for k in "acd"}
        assert await tx.select_current_heads([(asset, "b")]) == {(asset, "b"): b"\x00\x01"}
        heads = await tx.select_current_heads([(asset, "a"), (task, "a"), (task, "zz")])
        assert heads == {(asset, "a"): b"\x00\x01", (task, "a"): b"\x00\x01"}
        both = await tx.select_current_heads([(task, "a")], scope_id=asset, now=50)
        assert both == {**live, (task, "a"): b"\x00\x01"}


async def test_point_read_of_a_value_unexpired_at_now(log: LogBackend) -> None:
    asset, task = await _two_scopes(log)
    async with log.write() as tx:
        await tx.insert(
            Insert(current=[_current(asset, "a", 1), _current(asset, "b", 2, expires_at=50)])
        )
    assert await log.select_value(asset, "a", 10**15) == b"\x00\x01a"
    assert await log.select_value(asset, "b", 49) == b"\x00\x01b"
    assert await log.select_value(asset, "b", 50) is None  # expired at its expiry time
    assert await log.select_value(asset, "zz", 0) is None
    assert await log.select_value(task, "a", 0) is None  # another scope's key
    async with log.write() as tx:
        await tx.insert(Insert(current=[_current(asset, "a", 3)]))
        await tx.delete_current([(asset, "b")])
    assert await log.select_value(asset, "a", 0) == b"\x00\x01a"
    assert await log.select_value(asset, "b", 0) is None


async def test_delete_current_by_key_seq_scope_and_all(log: LogBackend) -> None:
    asset, task = await _two_scopes(log)
    rows = [_current(asset, k, i + 1) for i, k in enumerate(["a", "b", "c", "d"])]
    rows.append(_current(task, "a", 5))
    async with log.write() as tx:
        await tx.insert(Insert(current=rows))
    async with log.write() as tx:
        await tx.delete_current([(asset, "a")], keys_at=[(asset, "b", 2), (asset, "c", 99)])
    # Only the row still written at the seq named goes: "c" was written at 3.
    assert [r.key for r in await log.select_current(asset)] == ["c", "d"]
    async with log.write() as tx:
        await tx.delete_current(scope_ids=[asset])
    assert await log.select_current(asset) == []
    assert [r.key for r in await log.select_current(task)] == ["a"]
    async with log.write() as tx:
        await tx.delete_current(every=True)
        await tx.insert(Insert(current=[_current(asset, "z", 6)]))
    assert [(r.scope_id, r.key) for r in await log.select_current()] == [(asset, "z")]


async def test_compaction_primitives(log: LogBackend) -> None:
    asset, _ = await _two_scopes(log)
    events = [_event(seq, asset, seq, "k") for seq in (1, 2, 3)]
    async with log.write() as tx:
        head = LogHead(last_seq=3, last_recorded_at=1_003)
        await tx.insert(Insert(events=events, current=[_current(asset, "k", 3)], head=head))
    async with log.write() as tx:
        assert await tx.delete_events([1, 2, 42]) == 2
        await tx.update_stored(
            payloads=[(3, b"sealed"), (42, b"none")],
            values=[(b"old", asset, "k", 2), (b"new", asset, "k", 3)],
        )
    left = [e async for e in log.select_all_events()]
    assert [(e.seq, e.version, e.payload) for e in left] == [(3, 3, b"sealed")]
    assert [r.value for r in await log.select_current(asset, CurrentFilter(key="k"))] == [b"new"]
    assert (await log.select_head()).last_seq == 3  # positions are never handed out again


async def test_idempotency_results_kept_and_forgotten(log: LogBackend) -> None:
    asset, task = await _two_scopes(log)
    async with log.write() as tx:
        kept = [
            IdempotentRow(scope_id=asset, idempotency_id="x", result=b"rx", recorded_at=1),
            IdempotentRow(scope_id=task, idempotency_id="x", result=b"ry", recorded_at=2),
            IdempotentRow(scope_id=asset, idempotency_id="z", result=b"rz", recorded_at=9),
        ]
        await tx.insert(Insert(idempotent=kept))
    async with log.write() as tx:
        found = await tx.select_idempotent([(asset, "x"), (task, "x"), (task, "z")])
        assert found == {(asset, "x"): b"rx", (task, "x"): b"ry"}
    assert (await log.select_storage(idempotent_before=9)).idempotent_before == 2
    async with log.write() as tx:
        assert await tx.delete_idempotent(recorded_before=9, limit=1) == 1
    async with log.write() as tx:
        assert await tx.delete_idempotent(recorded_before=9, limit=5) == 1
    assert (await log.select_storage(idempotent_before=10)).idempotent_before == 1


async def _failing_batch(log: LogBackend, scope_id: int) -> None:
    async with log.write() as tx:
        await tx.insert(Insert(events=[_event(1, scope_id, 1, "k")]))
        await tx.insert(Insert(current=[_current(scope_id, "k", 1)]))
        await tx.insert(Insert(scopes=[ScopeRow(scope_id=0, scope_key="asset:b")]))
        raise RuntimeError("batch failed")


async def test_a_failed_transaction_leaves_nothing(log: LogBackend) -> None:
    asset, _ = await _two_scopes(log)
    with pytest.raises(RuntimeError, match="batch failed"):
        await _failing_batch(log, asset)
    assert [e async for e in log.select_all_events()] == []
    assert await log.select_current() == []
    assert await log.select_scope("asset:b") is None


async def test_close(log: LogBackend) -> None:
    asset, _ = await _two_scopes(log)
    async with log.write() as tx:
        await tx.insert(Insert(events=[_event(1, asset, 1, "k")]))
    storage = await log.select_storage()
    assert storage.bytes > 0
    assert storage.idempotent_before == 0  # not asked
    assert await log.select_value(asset, "k", 0) is None  # SQLite keeps a cursor for it
    await log.aclose()
    await log.aclose()  # again: nothing to do
    with pytest.raises(StoreClosedError):
        await log.select_scopes()
    with pytest.raises(StoreClosedError):
        await log.select_current()
    with pytest.raises(StoreClosedError):
        await log.select_value(asset, "k", 0)
