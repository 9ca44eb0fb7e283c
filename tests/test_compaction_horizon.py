"""The compaction horizon is per key: history refuses only questions that need a removed event.

Over every backend; the last tests open a store file that tasktrail 0.1 (main at 0e63219)
compacted, whose marker says only "every key before A".
"""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import FakeClock, StoreFactory

from eventstore import NEVER_EXPIRE, HistoryCompactedError, Store, TaskScope, open_store
from projections import At

HOUR = timedelta(hours=1)
SCOPE = TaskScope("d", "r", "t")
FIXTURE = Path(__file__).parent / "fixtures" / "compacted-before-key-horizon.db"


async def job_and_tmp(store: Store, clock: FakeClock) -> None:
    """The issue's story: job kept forever, tmp for an hour, compaction two hours later."""
    ts = store.task_store("d", "r", "t", try_number=1)
    await ts.set("job", "spark-1", retention=NEVER_EXPIRE)  # seq 1
    await ts.set("tmp", "scratch", retention=HOUR)  # seq 2
    clock.advance(2 * HOUR)
    await store.compact()  # removes tmp; marker at seq 3


async def test_a_key_compaction_never_touched_keeps_its_whole_timeline(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    async with make_store() as store:
        await job_and_tmp(store, clock)
        h = store.history(SCOPE)
        assert [(e.seq, e.value) for e in await h.timeline("job")] == [(1, "spark-1")]


async def test_events_list_the_kept_events_and_the_marker_in_its_place(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    async with make_store() as store:
        await job_and_tmp(store, clock)
        h = store.history(SCOPE)
        events = await h.events()
        assert [(e.seq, e.kind, e.key) for e in events] == [
            (1, "set", "job"),
            (3, "compacted", None),
        ]
        marker = events[1].detail
        assert marker is not None
        assert marker["keys_expired"] == ["tmp"]
        assert marker["keys"] == {"tmp": 2}
        (shown,) = marker["shown"]
        assert (shown["from_seq"], shown.get("until_seq")) == (2, None)  # none superseded it
        assert shown["expired_at"] is not None
        assert "expired" in marker["reason"]


async def test_a_removed_keys_timeline_is_refused_naming_where_it_is_complete_again(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    async with make_store() as store:
        await job_and_tmp(store, clock)
        h = store.history(SCOPE)
        with pytest.raises(HistoryCompactedError, match=r"timeline\('tmp', after_seq=2\)") as e:
            await h.timeline("tmp")
        assert e.value.earliest_seq == 3
        with pytest.raises(HistoryCompactedError):
            await h.timeline("tmp", after_seq=1)
        assert await h.timeline("tmp", after_seq=2) == []
        await store.task_store("d", "r", "t", try_number=1).set("tmp", "again")
        assert [e.value for e in await h.timeline("tmp", after_seq=2)] == ["again"]


async def test_a_state_is_refused_only_while_the_removed_value_would_show(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    async with make_store() as store:
        ts = store.task_store("d", "r", "t", try_number=1)
        await ts.set("job", "spark-1", retention=NEVER_EXPIRE)  # seq 1
        start = clock.now
        clock.advance()
        await ts.set("tmp", "scratch", retention=HOUR)  # seq 2, expires at start + 1h + 1s
        clock.advance(2 * HOUR)
        await ts.set("progress", 5, retention=NEVER_EXPIRE)  # seq 3, after tmp expired
        clock.advance()
        await store.compact()
        h = store.history(SCOPE)

        # Before tmp was written, and once it had expired: answered as before compaction.
        assert await h.state(At.seq(1)) == {"job": "spark-1"}
        assert await h.state(At.version(1)) == {"job": "spark-1"}
        assert await h.state(At.time(start)) == {"job": "spark-1"}
        assert await h.state(At.time(start + 2 * HOUR)) == {"job": "spark-1"}
        assert await h.state(At.seq(3)) == {"job": "spark-1", "progress": 5}
        assert await h.state(At.start_of_try(1)) == {}
        # While tmp was live: it would show, and it is gone.
        for at in (At.seq(2), At.version(2), At.time(start + HOUR)):
            with pytest.raises(HistoryCompactedError, match=r"At\.seq\(3\)") as e:
                await h.state(at)
            assert e.value.earliest_seq == 3
        d = await h.diff(At.seq(1), At.seq(3))
        assert (d.added, d.removed, d.changed) == ({"progress": 5}, {}, {})
        with pytest.raises(HistoryCompactedError):
            await h.diff(At.seq(1), At.seq(2))


async def test_superseded_history_is_refused_only_for_its_key(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    async with make_store(config=_horizon(days=1)) as store:
        ts = store.task_store("d", "r", "t", try_number=1)
        await ts.set("offset", 1, retention=NEVER_EXPIRE)  # seq 1: superseded, goes
        await ts.set("job", "spark-1", retention=NEVER_EXPIRE)  # seq 2
        await ts.set("offset", 2, retention=NEVER_EXPIRE)  # seq 3
        assert await store.history(SCOPE).state(At.seq(2)) == {"offset": 1, "job": "spark-1"}
        clock.advance(timedelta(days=3))
        await store.compact()
        h = store.history(SCOPE)
        assert [e.value for e in await h.timeline("job")] == ["spark-1"]
        with pytest.raises(HistoryCompactedError, match=r"At\.seq\(3\)"):
            await h.state(At.seq(2))  # offset 1 would show
        assert await h.state(At.seq(3)) == {"offset": 2, "job": "spark-1"}
        assert [e.value for e in await h.timeline("offset", after_seq=1)] == [2]


async def test_end_of_a_try_whose_last_write_went_is_found_from_the_marker(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    async with make_store() as store:
        t1 = store.task_store("d", "r", "t", try_number=1)
        await t1.set("job", "spark-1", retention=NEVER_EXPIRE)  # seq 1
        await t1.set("lease", "w1", retention=HOUR)  # seq 2: try 1's last write, goes
        clock.advance(2 * HOUR)
        t2 = store.task_store("d", "r", "t", try_number=2)
        await t2.set("job", "spark-2", retention=NEVER_EXPIRE)  # seq 3
        await store.compact()
        h = store.history(SCOPE)
        with pytest.raises(HistoryCompactedError):
            await h.state(At.end_of_try(1))  # it left lease behind, and lease is gone
        assert await h.state(At.start_of_try(2)) == {"job": "spark-1"}  # lease had expired
        assert await h.state(At.end_of_try(2)) == {"job": "spark-2"}
        assert [t.try_number for t in await h.tries()] == [1, 2]


def _horizon(days: float):  # type: ignore[no-untyped-def]
    from eventstore import StoreConfig

    return StoreConfig(history_horizon_days=days)


# --- markers written before the per-key horizon ------------------------------------------------


@pytest.fixture
def old_store(tmp_path: Path) -> str:
    """A copy of a store file tasktrail 0.1 made and compacted (see tests/fixtures)."""
    path = tmp_path / "old.db"
    shutil.copy(FIXTURE, path)
    return f"sqlite:///{path}"


async def test_a_store_compacted_before_the_per_key_horizon_opens_and_reads(
    old_store: str,
) -> None:
    # The file: job (seq 1), tmp (seq 2, removed), progress 10 (seq 3), the marker (seq 4,
    # answerable_from_seq 4, no per-key fields), progress 20 (seq 5).
    async with open_store(old_store, clock=FakeClock()) as store:
        assert (await store.verify()).ok
        h = store.history(SCOPE)
        events = await h.events()
        assert [(e.seq, e.kind) for e in events] == [
            (1, "set"),
            (3, "set"),
            (4, "compacted"),
            (5, "set"),
        ]
        assert events[2].detail is not None
        assert events[2].detail["per_key"] is False
        current = await store.task_store("d", "r", "t").items()
        assert current == {"job": "spark-1", "progress": 20}


async def test_an_old_marker_reads_as_every_key_before_its_point(old_store: str) -> None:
    async with open_store(old_store, clock=FakeClock()) as store:
        h = store.history(SCOPE)
        for question in (h.state(At.seq(3)), h.timeline("job"), h.state(At.start_of_try(1))):
            with pytest.raises(HistoryCompactedError, match=r"At\.seq\(4\)"):
                await question
        assert await h.state(At.seq(4)) == {"job": "spark-1", "progress": 10}
        assert [e.value for e in await h.timeline("progress", after_seq=3)] == [20]
        assert await h.answerable_from() == 4


async def test_a_new_compaction_of_an_old_store_adds_a_per_key_marker_and_keeps_the_old_one(
    old_store: str,
) -> None:
    clock = FakeClock()
    async with open_store(old_store, config=_horizon(days=1), clock=clock) as store:
        clock.now = clock.now.replace(year=2027)
        report = await store.compact()
        assert report.events_removed == 1  # progress 10, superseded a year ago
        h = store.history(SCOPE)
        markers = [e for e in await h.events() if e.kind == "compacted"]
        assert [m.detail["per_key"] for m in markers if m.detail] == [False, True]
        # The old marker still refuses before seq 4; progress 10, gone now, shows until seq 5.
        for seq in (2, 4):
            with pytest.raises(HistoryCompactedError, match=r"At\.seq\(5\)"):
                await h.state(At.seq(seq))
        assert await h.state(At.seq(5)) == {"job": "spark-1", "progress": 20}
        assert (await store.verify()).ok


def test_the_fixture_is_an_old_marker_in_todays_schema() -> None:
    # The per-key horizon lives in the marker's payload (new fields with defaults), so the
    # schema did not change: the file is at the newest schema version, and no step runs on it.
    import sqlite3

    from eventstore.log.backends.sqlite.backend import SCHEMA_VERSION

    with sqlite3.connect(FIXTURE) as conn:
        (payload,) = conn.execute("SELECT payload FROM events WHERE kind = 'compacted'").fetchone()
        (version,) = conn.execute("SELECT version FROM schema_version").fetchone()
    conn.close()
    assert b"per_key" not in payload
    assert b'"answerable_from_seq":4' in payload
    assert version == SCHEMA_VERSION


async def test_many_stretches_of_one_key_are_capped_and_never_refuse_less(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    async with make_store() as store:
        ts = store.task_store("d", "r", "t", try_number=1)
        await ts.set("job", "spark-1", retention=NEVER_EXPIRE)
        live_at = []
        for i in range(40):  # a lease renewed after each expiry: 40 separate stretches
            live_at.append(clock.now)
            await ts.set("lease", i, retention=timedelta(seconds=1))
            clock.advance(timedelta(seconds=2))
        await ts.set("done", True, retention=NEVER_EXPIRE)
        clock.advance(HOUR)
        await store.compact()
        h = store.history(SCOPE)
        (marker,) = [e.detail for e in await h.events() if e.kind == "compacted"]
        assert marker is not None
        assert len(marker["shown"]) <= 32
        assert all(s.get("until_seq") or s.get("expired_at") for s in marker["shown"])
        for moment in live_at:  # every lease would show: refused, whether merged or not
            with pytest.raises(HistoryCompactedError):
                await h.state(At.time(moment))
        # Between the newest leases (their stretches kept exact), and after the last one.
        assert await h.state(At.time(live_at[-1] + timedelta(seconds=1.5))) == {"job": "spark-1"}
        assert await h.state(At.time(clock.now)) == {"done": True, "job": "spark-1"}
