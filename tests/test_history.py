"""History and time-travel of a scope, over every backend: events, states at every kind of point,
diffs, timelines, tries, and the answers compaction takes away."""

from __future__ import annotations

from datetime import timedelta

import pytest

from eventstore import (
    NEVER_EXPIRE,
    AssetScope,
    HistoryCompactedError,
    Store,
    StoreClosedError,
    TaskScope,
)
from eventstore.log.backends.rows import EventRow, Insert
from eventstore.log.errors import NoSuchPointError
from eventstore.log.events import Compacted, encode_event, to_micros
from eventstore.log.scopes import Scope, scope_key
from projections import At, Diff, History
from tests.conftest import FakeClock, StoreFactory

SCOPE = TaskScope("etl", "run_1", "load")


def task(store: Store, try_number: int | None = 1, map_index: int = -1):  # type: ignore[no-untyped-def]
    return store.task_store("etl", "run_1", "load", map_index, try_number)


async def append_marker(store: Store, scope: Scope, marker: Compacted) -> int:
    """Append a compaction marker the way compaction will: straight through the backend."""
    async with store.backend.write() as tx:
        key = scope_key(scope)
        head, scopes = await tx.select_head_and_scopes([key])
        row = scopes[key]
        row.version += 1
        now = max(to_micros(store.now()), head.last_recorded_at)
        seq = head.last_seq + 1
        event = [
            EventRow(
                seq=seq,
                scope_id=row.scope_id,
                version=row.version,
                kind="compacted",
                key=None,
                expires_at=None,
                recorded_at=now,
                try_number=None,
                actor="system",
                payload=encode_event(marker),
            )
        ]
        row.updated_at = now
        head.last_seq = seq
        head.last_recorded_at = now
        await tx.insert(Insert(events=event, scopes=[row], head=head))
    return seq


async def two_tries(store: Store, clock: FakeClock) -> None:
    """Try 1 sets job_id and offset; try 2 moves offset, adds done, deletes job_id."""
    t1 = task(store, 1)
    await t1.set("job_id", "spark-1")  # seq 1
    clock.advance()
    await t1.set("offset", 100)  # seq 2
    clock.advance()
    t2 = task(store, 2)
    await t2.set("offset", 250)  # seq 3
    clock.advance()
    await t2.set("done", True)  # seq 4
    clock.advance()
    await t2.delete("job_id")  # seq 5


# --- points ---------------------------------------------------------------------------------


def test_points_print_as_they_are_written() -> None:
    assert str(At.seq(41)) == "At.seq(41)"
    assert str(At.end_of_try(2)) == "At.end_of_try(2)"
    assert At.version(3) == At.version(3)


def test_points_reject_negative_numbers_and_naive_times() -> None:
    from datetime import datetime

    with pytest.raises(ValueError, match="position must be an int >= 0"):
        At.seq(-1)
    with pytest.raises(ValueError, match="try_number must be an int >= 0"):
        At.start_of_try(True)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="aware datetime"):
        At.time(datetime(2026, 1, 1))


# --- events ---------------------------------------------------------------------------------


async def test_events_come_oldest_first_with_who_and_when(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    async with make_store() as store:
        await two_tries(store, clock)
        events = await store.history(SCOPE).events()
        assert [(e.seq, e.kind, e.key, e.value) for e in events] == [
            (1, "set", "job_id", "spark-1"),
            (2, "set", "offset", 100),
            (3, "set", "offset", 250),
            (4, "set", "done", True),
            (5, "delete", "job_id", None),
        ]
        assert [e.try_number for e in events] == [1, 1, 2, 2, 2]
        assert [e.version for e in events] == [1, 2, 3, 4, 5]
        assert events[0].recorded_at == clock.now - timedelta(seconds=4)
        assert all(e.scope == SCOPE and e.actor == "task" for e in events)


async def test_events_filter_by_key_kind_try_and_time(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    async with make_store() as store:
        await two_tries(store, clock)
        h = store.history(SCOPE)
        start = clock.now - timedelta(seconds=4)
        assert [e.seq for e in await h.events(key="offset")] == [2, 3]
        assert [e.seq for e in await h.events(kinds=["delete"])] == [5]
        assert [e.seq for e in await h.events(kinds="set", try_number=2)] == [3, 4]
        assert [e.seq for e in await h.events(since=start + timedelta(seconds=1))] == [2, 3, 4, 5]
        assert [e.seq for e in await h.events(until=start + timedelta(seconds=1))] == [1, 2]
        assert [e.seq for e in await h.events(since=start, until=start)] == [1]


async def test_events_page_with_after_seq_and_limit(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    async with make_store() as store:
        await two_tries(store, clock)
        h = store.history(SCOPE)
        first = await h.events(limit=2)
        rest = await h.events(after_seq=first[-1].seq, limit=2)
        last = await h.events(after_seq=rest[-1].seq, limit=2)
        assert [e.seq for e in first + rest + last] == [1, 2, 3, 4, 5]


async def test_events_reject_unknown_kinds_and_naive_times(make_store: StoreFactory) -> None:
    async with make_store() as store:
        from datetime import datetime

        h = store.history(SCOPE)
        with pytest.raises(ValueError, match=r"unknown event kinds \['sett'\]"):
            await h.events(kinds=["sett"])
        with pytest.raises(TypeError, match="since must be an aware datetime"):
            await h.events(since=datetime(2026, 1, 1))
        with pytest.raises(ValueError, match="limit must be an int >= 0"):
            await h.events(limit=-1)


async def test_a_scope_never_written_has_an_empty_history(make_store: StoreFactory) -> None:
    async with make_store() as store:
        h = store.history(SCOPE)
        assert await h.events() == []
        assert await h.timeline("x") == []
        assert await h.tries() == []
        assert await h.state(At.seq(10)) == {}
        assert await h.state(At.version(0)) == {}
        with pytest.raises(NoSuchPointError, match="nothing was ever written"):
            await h.state(At.end_of_try(1))
        with pytest.raises(NoSuchPointError, match="at version 0"):
            await h.state(At.version(1))


async def test_history_of_one_scope_leaves_out_other_scopes(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    async with make_store() as store:
        await task(store, 1, map_index=0).set("other", 1)
        await two_tries(store, clock)
        events = await store.history(SCOPE).events()
        assert [e.key for e in events] == ["job_id", "offset", "offset", "done", "job_id"]
        assert [e.seq for e in events] == [2, 3, 4, 5, 6]


# --- states at points -------------------------------------------------------------------------


async def test_state_as_of_a_position_includes_the_event_at_it(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    async with make_store() as store:
        await two_tries(store, clock)
        h = store.history(SCOPE)
        assert await h.state(At.seq(0)) == {}
        assert await h.state(At.seq(1)) == {"job_id": "spark-1"}
        assert await h.state(At.seq(3)) == {"job_id": "spark-1", "offset": 250}
        assert await h.state(At.seq(5)) == {"done": True, "offset": 250}
        assert await h.state(At.seq(1000)) == {"done": True, "offset": 250}


async def test_state_as_of_a_position_between_events_of_the_scope(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    async with make_store() as store:
        t = task(store)
        await t.set("a", 1)  # seq 1
        await store.task_store("other", "r", "t").set("x", 1)  # seq 2
        await t.set("a", 2)  # seq 3
        h = store.history(SCOPE)
        assert await h.state(At.seq(2)) == {"a": 1}
        assert (await h.resolve(At.seq(2))).seq == 1


async def test_state_as_of_a_version(make_store: StoreFactory, clock: FakeClock) -> None:
    async with make_store() as store:
        await two_tries(store, clock)
        h = store.history(SCOPE)
        assert await h.state(At.version(0)) == {}
        assert await h.state(At.version(2)) == {"job_id": "spark-1", "offset": 100}
        with pytest.raises(NoSuchPointError, match=r"At.version\(6\) .* the scope is at version 5"):
            await h.state(At.version(6))


async def test_state_as_of_a_time_includes_events_recorded_at_it(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    async with make_store() as store:
        start = clock.now
        await two_tries(store, clock)
        h = store.history(SCOPE)
        assert await h.state(At.time(start - timedelta(microseconds=1))) == {}
        assert await h.state(At.time(start)) == {"job_id": "spark-1"}
        assert await h.state(At.time(start + timedelta(seconds=1, microseconds=5))) == {
            "job_id": "spark-1",
            "offset": 100,
        }


async def test_state_at_the_end_of_a_try_is_what_it_left_behind(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    async with make_store() as store:
        await two_tries(store, clock)
        h = store.history(SCOPE)
        assert await h.state(At.end_of_try(1)) == {"job_id": "spark-1", "offset": 100}
        assert await h.state(At.end_of_try(2)) == {"done": True, "offset": 250}


async def test_state_at_the_start_of_a_try_is_what_it_saw(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    async with make_store() as store:
        await two_tries(store, clock)
        h = store.history(SCOPE)
        assert await h.state(At.start_of_try(1)) == {}
        assert await h.state(At.start_of_try(2)) == {"job_id": "spark-1", "offset": 100}
        position = await h.resolve(At.start_of_try(2))
        assert (position.seq, position.version) == (2, 2)


async def test_a_try_that_never_wrote_is_named_with_the_tries_that_did(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    async with make_store() as store:
        await two_tries(store, clock)
        h = store.history(SCOPE)
        with pytest.raises(
            NoSuchPointError, match=r"try 3 never wrote to it; tries that wrote: \[1, 2\]"
        ):
            await h.state(At.end_of_try(3))
        with pytest.raises(NoSuchPointError, match=r"At.start_of_try\(7\)"):
            await h.state(At.start_of_try(7))


async def test_untracked_writes_have_no_tries(make_store: StoreFactory) -> None:
    async with make_store() as store:
        await task(store, None).set("a", 1)
        h = store.history(SCOPE)
        assert await h.tries() == []
        with pytest.raises(NoSuchPointError, match="no write of it carries a try number"):
            await h.state(At.end_of_try(1))


async def test_a_clear_keeps_the_states_before_it_reachable(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    async with make_store() as store:
        t = task(store)
        await t.set_many({"a": 1, "b": 2})  # seq 1, 2
        await t.clear()  # seq 3
        await t.set("c", 3)  # seq 4
        h = store.history(SCOPE)
        assert await h.state(At.seq(2)) == {"a": 1, "b": 2}
        assert await h.state(At.seq(3)) == {}
        assert await h.state(At.seq(4)) == {"c": 3}
        assert [e.kind for e in await h.events()] == ["set", "set", "clear", "set"]


async def test_a_clear_of_every_map_index_is_in_each_index_history(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    async with make_store() as store:
        await task(store, 1, map_index=0).set("a", 1)
        await task(store, 1, map_index=1).set("b", 2)
        clock.advance()
        await task(store, 1, map_index=0).clear(all_map_indices=True)
        sibling = store.history(TaskScope("etl", "run_1", "load", 1))
        events = await sibling.events()
        assert [(e.kind, e.detail) for e in events] == [
            ("set", None),
            ("clear", {"all_map_indices": True}),
        ]
        assert await sibling.state(At.seq(events[0].seq)) == {"b": 2}
        assert await sibling.state(At.seq(events[1].seq)) == {}


# --- expiry -----------------------------------------------------------------------------------


async def test_a_state_as_of_a_time_applies_expiry_as_of_that_time(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    async with make_store() as store:
        start = clock.now
        t = task(store)
        await t.set("lease", "w-1", retention=timedelta(seconds=10))
        await t.set("job_id", "spark-1", retention=NEVER_EXPIRE)
        h = store.history(SCOPE)
        assert await h.state(At.time(start + timedelta(seconds=9))) == {
            "job_id": "spark-1",
            "lease": "w-1",
        }
        assert await h.state(At.time(start + timedelta(seconds=10))) == {"job_id": "spark-1"}


async def test_a_state_at_a_position_applies_expiry_as_of_its_recorded_time(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    async with make_store() as store:
        t = task(store)
        await t.set("lease", "w-1", retention=timedelta(seconds=10))  # seq 1
        clock.advance(timedelta(seconds=30))
        await t.set("offset", 5)  # seq 2, recorded after the lease expired
        h = store.history(SCOPE)
        assert await h.state(At.seq(1)) == {"lease": "w-1"}
        assert await h.state(At.seq(2)) == {"offset": 5}
        position = await h.resolve(At.seq(2))
        assert position.expiry_at == position.recorded_at == clock.now


async def test_the_start_of_a_try_applies_expiry_as_of_the_try_first_write(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    async with make_store() as store:
        t1 = task(store, 1)
        await t1.set("job_id", "spark-1", retention=timedelta(minutes=5))
        clock.advance(timedelta(hours=1))  # the retry starts after job_id expired
        await task(store, 2).set("job_id", "spark-2")
        h = store.history(SCOPE)
        assert await h.state(At.end_of_try(1)) == {"job_id": "spark-1"}
        assert await h.state(At.start_of_try(2)) == {}
        assert (await h.resolve(At.start_of_try(2))).expiry_at == clock.now


# --- diff, timeline, tries --------------------------------------------------------------------


async def test_diff_names_keys_added_removed_and_changed(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    async with make_store() as store:
        await two_tries(store, clock)
        d = await store.history(SCOPE).diff(At.end_of_try(1), At.end_of_try(2))
        assert d == Diff(
            added={"done": True},
            removed={"job_id": "spark-1"},
            changed={"offset": (100, 250)},
        )
        assert d


async def test_diff_of_a_point_with_itself_is_empty(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    async with make_store() as store:
        await two_tries(store, clock)
        d = await store.history(SCOPE).diff(At.seq(3), At.version(3))
        assert d == Diff(added={}, removed={}, changed={})
        assert not d


async def test_diff_tells_one_from_true_and_from_one_point_zero(make_store: StoreFactory) -> None:
    async with make_store() as store:
        t = task(store)
        await t.set_many({"flag": 1, "ratio": 1, "same": [1, {"a": 2}]})  # seq 1-3
        await t.set_many({"flag": True, "ratio": 1.0, "same": [1, {"a": 2}]})  # seq 4-6
        d = await store.history(SCOPE).diff(At.seq(3), At.seq(6))
        assert d.changed == {"flag": (1, True), "ratio": (1, 1.0)}


async def test_timeline_has_every_event_of_one_key(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    async with make_store() as store:
        await two_tries(store, clock)
        h = store.history(SCOPE)
        assert [(e.seq, e.kind, e.value) for e in await h.timeline("job_id")] == [
            (1, "set", "spark-1"),
            (5, "delete", None),
        ]
        assert [e.value for e in await h.timeline("offset")] == [100, 250]
        assert [e.seq for e in await h.timeline("offset", after_seq=2)] == [3]
        assert await h.timeline("never") == []


async def test_timeline_pages_with_after_seq_and_limit(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    async with make_store() as store:
        t = task(store)
        for i in range(5):
            await t.set("offset", i)
        h = store.history(SCOPE)
        first = await h.timeline("offset", limit=2)
        assert [e.value for e in first] == [0, 1]
        rest = await h.timeline("offset", after_seq=first[-1].seq, limit=2)
        assert [e.value for e in rest] == [2, 3]
        with pytest.raises(ValueError, match="limit must be an int >= 0"):
            await h.timeline("offset", limit=-1)


async def test_tries_summarise_each_try(make_store: StoreFactory, clock: FakeClock) -> None:
    async with make_store() as store:
        start = clock.now
        await two_tries(store, clock)
        await task(store, None).set("note", "by hand")
        tries = await store.history(SCOPE).tries()
        assert [(t.try_number, t.first_seq, t.last_seq, t.writes, t.keys) for t in tries] == [
            (1, 1, 2, 2, ["job_id", "offset"]),
            (2, 3, 5, 3, ["done", "job_id", "offset"]),
        ]
        assert tries[0].first_write_at == start
        assert tries[1].last_write_at == start + timedelta(seconds=4)


# --- assets -------------------------------------------------------------------------------------


async def test_asset_scopes_have_history(make_store: StoreFactory, clock: FakeClock) -> None:
    async with make_store() as store:
        assets = store.asset_store(name="warehouse.orders")
        await assets.set("watermark", 1042)
        clock.advance(timedelta(days=400))  # asset entries never expire
        await assets.set("watermark", 1043)
        h = store.history(AssetScope(name="warehouse.orders"))
        assert await h.state(At.version(1)) == {"watermark": 1042}
        assert await h.state(At.time(clock.now)) == {"watermark": 1043}
        assert [e.value for e in await h.timeline("watermark")] == [1042, 1043]
        assert await h.tries() == []
        assert await store.history(AssetScope(uri="s3://other")).events() == []


# --- compaction ---------------------------------------------------------------------------------


async def test_an_older_marker_refuses_every_key_before_its_point_naming_it(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    # A marker written before the per-key horizon says only "every key before A may be gone".
    async with make_store() as store:
        await two_tries(store, clock)  # seq 1..5
        clock.advance()
        await append_marker(store, SCOPE, Compacted(reason="expired", answerable_from_seq=4))
        h = store.history(SCOPE)
        assert await h.answerable_from() == 4
        for question in (
            h.state(At.seq(3)),
            h.state(At.end_of_try(1)),
            h.state(At.start_of_try(2)),
            h.state(At.version(0)),
            h.diff(At.end_of_try(1), At.end_of_try(2)),
            h.timeline("offset"),
        ):
            with pytest.raises(
                HistoryCompactedError, match=r"earliest point still answerable is At.seq\(4\)"
            ) as caught:
                await question
            assert caught.value.earliest_seq == 4


async def test_events_list_what_the_log_holds_and_never_raise_for_compaction(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    async with make_store() as store:
        await two_tries(store, clock)  # seq 1..5
        clock.advance()
        marker = await append_marker(
            store, SCOPE, Compacted(reason="expired", answerable_from_seq=4)
        )
        h = store.history(SCOPE)
        assert [e.seq for e in await h.events()] == [1, 2, 3, 4, 5, marker]
        assert [e.seq for e in await h.events(after_seq=2)] == [3, 4, 5, marker]
        since = clock.now - timedelta(days=1)
        assert [e.seq for e in await h.events(since=since)] == [1, 2, 3, 4, 5, marker]


async def test_questions_from_the_compacted_point_on_are_answered(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    async with make_store() as store:
        await two_tries(store, clock)  # seq 1..5, one second apart
        clock.advance()
        marker = await append_marker(
            store, SCOPE, Compacted(reason="expired", answerable_from_seq=4)
        )
        h = store.history(SCOPE)
        assert await h.state(At.seq(4)) == {"done": True, "job_id": "spark-1", "offset": 250}
        assert await h.state(At.end_of_try(2)) == {"done": True, "offset": 250}
        assert [e.seq for e in await h.events(after_seq=3)] == [4, 5, marker]
        time_of_4 = (await h.events(after_seq=3, limit=1))[0].recorded_at
        assert [e.seq for e in await h.events(since=time_of_4)] == [4, 5, marker]
        assert [e.kind for e in await h.events(after_seq=5)] == ["compacted"]
        assert [e.seq for e in await h.timeline("job_id", after_seq=3)] == [5]
        events = await h.events(kinds=["compacted"], after_seq=3)
        assert events[0].detail is not None
        assert events[0].detail["answerable_from_seq"] == 4
        assert events[0].actor == "system"


async def test_an_older_marker_falls_back_to_removed_through_seq(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    async with make_store() as store:
        await two_tries(store, clock)
        await append_marker(store, SCOPE, Compacted(reason="horizon", removed_through_seq=2))
        h = store.history(SCOPE)
        assert await h.answerable_from() == 3
        with pytest.raises(HistoryCompactedError, match=r"At.seq\(3\)"):
            await h.state(At.seq(2))
        assert await h.state(At.seq(3)) == {"job_id": "spark-1", "offset": 250}


async def test_the_latest_marker_decides(make_store: StoreFactory, clock: FakeClock) -> None:
    async with make_store() as store:
        await two_tries(store, clock)
        await append_marker(store, SCOPE, Compacted(reason="a", answerable_from_seq=2))
        await append_marker(store, SCOPE, Compacted(reason="b", answerable_from_seq=5))
        h = store.history(SCOPE)
        with pytest.raises(
            HistoryCompactedError, match=r"state\(At.seq\(4\)\) for task etl/run_1/load"
        ):
            await h.state(At.seq(4))


async def test_compaction_of_one_scope_leaves_others_answerable(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    async with make_store() as store:
        await two_tries(store, clock)
        await task(store, 1, map_index=3).set("x", 1)
        await append_marker(store, SCOPE, Compacted(reason="expired", answerable_from_seq=5))
        other = store.history(TaskScope("etl", "run_1", "load", 3))
        assert await other.answerable_from() == 0
        assert await other.state(At.seq(0)) == {}
        assert len(await other.events()) == 1


# --- the store face ---------------------------------------------------------------------------


async def test_history_survives_reopening_the_store(
    make_store: StoreFactory, clock: FakeClock, backend_url: str
) -> None:
    if backend_url == "memory://":
        pytest.skip("an in-memory store does not outlive its process")
    async with make_store() as store:
        await two_tries(store, clock)
    async with make_store() as store:
        h = store.history(SCOPE)
        assert isinstance(h, History)
        assert await h.state(At.end_of_try(1)) == {"job_id": "spark-1", "offset": 100}


async def test_a_closed_store_gives_no_history(make_store: StoreFactory) -> None:
    async with make_store() as store:
        pass
    with pytest.raises(StoreClosedError, match="the store is closed"):
        store.history(SCOPE)


async def test_a_history_error_leaves_the_store_block_as_itself(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    async def ask() -> None:
        async with make_store() as store:
            await two_tries(store, clock)
            await store.history(SCOPE).state(At.end_of_try(4))

    with pytest.raises(NoSuchPointError, match=r"At.end_of_try\(4\)"):
        await ask()
