"""Compaction semantics over every backend: what goes, what stays, markers, sizes."""

from __future__ import annotations

import contextlib
import re
import sqlite3
from datetime import timedelta
from pathlib import Path

import anyio
import pytest
from click.testing import CliRunner
from conftest import FakeClock, StoreFactory

from eventstore import (
    NEVER_EXPIRE,
    HistoryCompactedError,
    Store,
    StoreConfig,
    open_blocking_store,
    open_store,
)
from eventstore.cli import cli
from eventstore.log.backends.rows import CurrentFilter, EventFilter, EventRow
from eventstore.log.errors import ConfigError
from eventstore.log.events import Compacted, decode_event
from eventstore.log.scopes import Scope, TaskScope
from projections import At, compaction
from projections.compaction import CompactionReport, plan_scope, run_compaction_schedule

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


async def log_of(store: Store, scope: Scope) -> list[EventRow]:
    scope_id = await store.scope_id(scope)
    assert scope_id is not None
    return await store.backend.select_events(scope_id, EventFilter())


def markers(rows: list[EventRow]) -> list[Compacted]:
    found = []
    for row in rows:
        if row.kind == "compacted":
            event = decode_event(row.payload)
            assert isinstance(event, Compacted)
            found.append(event)
    return found


def positions(rows: list[EventRow]) -> list[tuple[int, int, str, str | None]]:
    return [(r.seq, r.version, r.kind, r.key) for r in rows if r.kind != "compacted"]


async def test_expired_key_leaves_the_log_and_the_projection(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    async with make_store() as store:
        ts = store.task_store("dag", "run", "task", try_number=1)
        await ts.set("lease", "a", retention=HOUR)
        await ts.set("lease", "b", retention=HOUR)
        await ts.set("job_id", "spark-1", retention=NEVER_EXPIRE)
        clock.advance(2 * HOUR)

        report = await store.compact()

        assert (report.keys_expired, report.events_removed, report.scopes_touched) == (1, 2, 1)
        rows = await log_of(store, ts.scope)
        assert [r.key for r in rows if r.kind != "compacted"] == ["job_id"]
        assert (
            await store.backend.select_current(rows[0].scope_id, CurrentFilter(key="lease")) == []
        )
        assert await ts.items() == {"job_id": "spark-1"}
        (marker,) = markers(rows)
        assert marker.keys_expired == ["lease"]
        assert marker.events_removed == 2
        assert marker.removed_from_seq == 1
        assert marker.removed_through_seq == 2
        assert (await store.verify()).ok


async def test_deleted_key_whose_last_value_expired_goes_with_its_delete(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    async with make_store() as store:
        ts = store.task_store("dag", "run", "task")
        await ts.set("tmp", 1, retention=HOUR)
        await ts.delete("tmp")
        await ts.set("keep", 1, retention=NEVER_EXPIRE)
        clock.advance(2 * HOUR)

        report = await store.compact()

        assert report.keys_expired == 1
        assert report.expired_events == 2
        assert [r.key for r in await log_of(store, ts.scope) if r.kind != "compacted"] == ["keep"]
        assert (await store.verify()).ok


async def test_live_never_expire_and_asset_values_are_kept(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    async with make_store() as store:
        ts = store.task_store("dag", "run", "task")
        await ts.set("job_id", "spark-1", retention=NEVER_EXPIRE)
        await ts.set("offset", 10, retention=timedelta(days=30))
        assets = store.asset_store(name="warehouse.orders")
        await assets.set("watermark", 1)
        await assets.set("watermark", 2)
        clock.advance(10 * DAY)

        report = await store.compact()

        assert report.events_removed == 0
        assert report.markers_appended == 0
        assert await ts.items() == {"job_id": "spark-1", "offset": 10}
        assert await assets.items() == {"watermark": 2}
        # No horizon: the full history of live keys stays, the superseded watermark too.
        assert len(await log_of(store, assets.scope)) == 2


async def test_superseded_history_older_than_the_horizon_goes(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    async with make_store(StoreConfig(history_horizon_days=7)) as store:
        ts = store.task_store("dag", "run", "task")
        assets = store.asset_store(name="orders")
        await ts.set("progress", 1, retention=NEVER_EXPIRE)
        await assets.set("watermark", 1)
        clock.advance(DAY)
        await ts.set("progress", 2, retention=NEVER_EXPIRE)  # supersedes 1, 9 days before now
        await assets.set("watermark", 2)
        clock.advance(DAY)
        await ts.set("progress", 3, retention=NEVER_EXPIRE)  # supersedes 2, 8 days before now
        clock.advance(5 * DAY)
        await ts.set("progress", 4, retention=NEVER_EXPIRE)  # supersedes 3, 3 days before now
        clock.advance(3 * DAY)

        report = await store.compact()

        assert report.superseded_events == 3  # progress 1 and 2, watermark 1
        assert report.keys_expired == 0
        kept = [r.seq for r in await log_of(store, ts.scope) if r.kind == "set"]
        assert len(kept) == 2  # progress 3 (superseded within the horizon) and 4 (current)
        assert await ts.get("progress") == 4
        assert await assets.get("watermark") == 2
        (marker,) = markers(await log_of(store, ts.scope))
        assert marker.horizon == clock.now - 7 * DAY
        assert (await store.verify()).ok


async def test_tombstones_with_nothing_left_to_hide_go(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    async with make_store(StoreConfig(history_horizon_days=1)) as store:
        ts = store.task_store("dag", "run", "task")
        await ts.set_many({"a": 1, "b": 2}, retention=NEVER_EXPIRE)
        await ts.delete("a")
        await ts.clear()
        clock.advance(3 * DAY)
        await ts.set("c", 3, retention=NEVER_EXPIRE)

        report = await store.compact()

        # a and b were superseded (by the delete and the clear) 3 days ago; then the delete and
        # the clear hide nothing any more.
        assert (report.superseded_events, report.tombstones) == (2, 2)
        assert [r.key for r in await log_of(store, ts.scope) if r.kind != "compacted"] == ["c"]
        assert await ts.items() == {"c": 3}
        assert (await store.verify()).ok


async def test_dry_run_changes_nothing_and_reports_the_same(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    async with make_store(StoreConfig(history_horizon_days=1)) as store:
        for task in range(3):
            ts = store.task_store("dag", "run", f"t{task}")
            await ts.set("tmp", task, retention=HOUR)
            await ts.set("keep", 0, retention=NEVER_EXPIRE)
            await ts.set("keep", 1, retention=NEVER_EXPIRE)
        clock.advance(2 * DAY)
        scope = TaskScope("dag", "run", "t0")
        before = await log_of(store, scope)

        dry = await store.compact(dry_run=True)

        assert dry.dry_run
        assert dry.bytes_after is None
        assert dry.markers_appended == 0
        assert await log_of(store, scope) == before
        assert await store.version(scope) == 3
        real = await store.compact()
        same = ("keys_expired", "events_removed", "expired_events", "superseded_events")
        assert [getattr(dry, f) for f in same] == [getattr(real, f) for f in same]
        assert (dry.scopes_touched, real.scopes_touched, real.markers_appended) == (3, 3, 3)
        assert (real.keys_expired, real.events_removed) == (3, 6)


async def test_positions_and_versions_never_renumber(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    async with make_store() as store:
        ts = store.task_store("dag", "run", "task")
        await ts.set("tmp", 1, retention=HOUR)
        await ts.set("keep", 1, retention=NEVER_EXPIRE)
        await ts.set("tmp", 2, retention=HOUR)
        await ts.set("keep", 2, retention=NEVER_EXPIRE)
        before = positions(await log_of(store, ts.scope))
        clock.advance(2 * HOUR)

        await store.compact()
        result = await ts.set("after", 1)

        after = await log_of(store, ts.scope)
        assert positions(after)[:2] == [p for p in before if p[3] == "keep"]
        assert (after[2].kind, after[2].seq, after[2].version) == ("compacted", 5, 5)
        assert (result.seq, result.version) == (6, 6)
        assert (await store.verify()).ok


async def test_marker_names_the_earliest_answerable_position(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    async with make_store() as store:
        ts = store.task_store("dag", "run", "task")
        await ts.set("tmp", 1, retention=HOUR)  # seq 1, expires at 1h
        await ts.set("keep", 1, retention=NEVER_EXPIRE)  # seq 2
        clock.advance(2 * HOUR)
        await ts.set("keep", 2, retention=NEVER_EXPIRE)  # seq 3: the first event after tmp expired
        clock.advance(HOUR)

        await store.compact()

        (marker,) = markers(await log_of(store, ts.scope))
        # States from seq 2 on had tmp in them until seq 3, the first event after its expiry.
        assert marker.answerable_from_seq == 3


async def test_marker_points_at_itself_when_no_kept_event_qualifies(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    async with make_store() as store:
        ts = store.task_store("dag", "run", "task")
        await ts.set("keep", 1, retention=NEVER_EXPIRE)
        await ts.set("tmp", 1, retention=HOUR)
        clock.advance(2 * HOUR)

        await store.compact()

        rows = await log_of(store, ts.scope)
        (marker,) = markers(rows)
        assert marker.answerable_from_seq == rows[-1].seq == 3


async def test_markers_accumulate_what_every_compaction_removed(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    async with make_store() as store:
        ts = store.task_store("dag", "run", "task", try_number=1)
        await ts.set("a", 1, retention=HOUR)
        await ts.set("keep", 1, retention=NEVER_EXPIRE)
        clock.advance(2 * HOUR)
        await store.compact()
        await ts.set("b", 1, retention=HOUR)
        clock.advance(2 * HOUR)

        await store.compact()

        first, second = markers(await log_of(store, ts.scope))
        assert second.removed_from_seq == first.removed_from_seq == 1
        assert second.removed_through_seq == 4
        assert second.answerable_from_seq > first.answerable_from_seq
        assert second.first_writes_removed == [1]
        assert second.keys_expired == ["b"]


async def test_a_second_compaction_with_nothing_to_do_appends_nothing(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    async with make_store() as store:
        ts = store.task_store("dag", "run", "task")
        await ts.set("tmp", 1, retention=HOUR)
        clock.advance(2 * HOUR)
        await store.compact()
        version = await ts.version()

        report = await store.compact()

        assert (report.events_removed, report.markers_appended) == (0, 0)
        assert await ts.version() == version


async def test_values_written_as_compaction_starts_are_never_removed(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    async with make_store() as store:
        ts = store.task_store("dag", "run", "task")
        await ts.set("gone", 1, expires_at=clock.now)  # expired the moment it was written

        report = await store.compact()

        assert report.events_removed == 0
        clock.advance()
        assert (await store.compact()).events_removed == 1


async def test_projection_rows_go_only_if_they_still_come_from_the_removed_event(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    async with make_store() as store:
        ts = store.task_store("dag", "run", "task")
        await ts.set("k", 1, retention=HOUR)
        scope_id = await store.scope_id(ts.scope)
        assert scope_id is not None
        await ts.set("k", 2, retention=NEVER_EXPIRE)  # a writer got there after the plan

        async with store.backend.write() as tx:
            await tx.delete_current(keys_at=[(scope_id, "k", 1)])

        assert await ts.get("k") == 2


async def test_idempotency_ids_older_than_the_window_are_forgotten(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    async with make_store(StoreConfig(idempotency_days=1)) as store:
        ts = store.task_store("dag", "run", "task")
        first = await ts.set("offset", 1, idempotency_id="old", retention=NEVER_EXPIRE)
        clock.advance(2 * DAY)
        recent = await ts.set("offset", 2, idempotency_id="recent", retention=NEVER_EXPIRE)
        clock.advance(HOUR)

        dry = await store.compact(dry_run=True)
        assert dry.idempotency_ids_forgotten == 1
        assert await ts.set("offset", 1, idempotency_id="old") == first, "a dry run forgot"

        report = await store.compact()

        assert report.idempotency_ids_forgotten == 1
        assert report.events_removed == 0, "forgetting ids removes no event"
        # Within the window a retry still gets its first result; past it, it is a new write.
        assert await ts.set("offset", 2, idempotency_id="recent") == recent
        again = await ts.set("offset", 1, idempotency_id="old")
        assert again.version == first.version + 2
        assert await ts.get("offset") == 1
        assert (await store.compact()).idempotency_ids_forgotten == 0


async def test_idempotency_ids_are_kept_forever_without_a_window(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    async with make_store(StoreConfig(idempotency_days=None)) as store:
        ts = store.task_store("dag", "run", "task")
        first = await ts.set("offset", 1, idempotency_id="old")
        clock.advance(400 * DAY)

        assert (await store.compact()).idempotency_ids_forgotten == 0
        assert await ts.set("offset", 1, idempotency_id="old") == first


def test_idempotency_window_must_be_positive() -> None:
    with pytest.raises(ConfigError, match=r"idempotency_days must be > 0 or None .*got 0"):
        StoreConfig(idempotency_days=0)


def test_plan_of_an_untouched_scope_is_none() -> None:
    row = EventRow(1, 1, 1, "set", "k", None, 10, None, "task", b'{"kind":"set"}')
    assert plan_scope([row], now=100, cutoff=50) is None
    assert plan_scope([], now=100, cutoff=None) is None


async def test_schedule_compacts_every_interval(make_store: StoreFactory, clock: FakeClock) -> None:
    async with make_store() as store:
        ts = store.task_store("dag", "run", "task")
        await ts.set("tmp", 1, retention=HOUR)
        clock.advance(2 * HOUR)
        reports: list[CompactionReport] = []
        ran = anyio.Event()

        def record(report: CompactionReport) -> None:
            reports.append(report)
            ran.set()

        async with anyio.create_task_group() as tg:
            await tg.start(run_compaction_schedule, store, 0.01, record)
            with anyio.fail_after(5):
                await ran.wait()
            tg.cancel_scope.cancel()

        assert reports[0].keys_expired == 1


async def test_schedule_rejects_a_non_positive_interval(make_store: StoreFactory) -> None:
    async with make_store() as store:
        with pytest.raises(ValueError, match="interval must be > 0"):
            await run_compaction_schedule(store, 0)


async def test_new_sqlite_files_give_space_back(tmp_path: Path, clock: FakeClock) -> None:
    url = f"sqlite:///{tmp_path / 'big.db'}"
    async with open_store(url, clock=clock) as store:
        assert auto_vacuum(tmp_path / "big.db") == 2  # INCREMENTAL
        for task in range(40):
            ts = store.task_store("dag", "run", f"t{task}")
            await ts.set_many({f"k{i}": "x" * 500 for i in range(50)}, retention=HOUR)
        clock.advance(2 * HOUR)

        report = await store.compact()

    assert report.events_removed == 2000
    assert report.bytes_after is not None
    assert report.bytes_after < report.bytes_before / 4


async def test_an_older_sqlite_file_is_converted_once_and_shrinks(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "old.db"
    with contextlib.closing(sqlite3.connect(path)) as conn:  # made before incremental vacuum
        conn.execute("CREATE TABLE made_elsewhere (x)")
    async with open_store(f"sqlite:///{path}", clock=clock) as store:
        assert auto_vacuum(path) == 0
        for task in range(40):
            ts = store.task_store("dag", "run", f"t{task}")
            await ts.set_many({f"k{i}": "x" * 500 for i in range(50)}, retention=HOUR)
        clock.advance(2 * HOUR)

        report = await store.compact()

        assert auto_vacuum(path) == 2
        assert (await store.verify()).ok
    assert report.bytes_after is not None
    assert report.bytes_after < report.bytes_before / 4


def auto_vacuum(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return int(conn.execute("PRAGMA auto_vacuum").fetchone()[0])


def test_cli_compact_dry_run_prints_the_report(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"

    async def seed() -> None:
        async with open_store(url) as store:
            await store.task_store("dag", "run", "task").set("k", 1)

    anyio.run(seed)
    runner = CliRunner()

    table = runner.invoke(cli, ["compact", "--db", url, "--dry-run"])
    as_json = runner.invoke(cli, ["compact", "--db", url, "--dry-run", "--json"])

    assert table.exit_code == 0, table.output
    assert "events removed" in table.output
    assert as_json.exit_code == 0, as_json.output
    assert '"dry_run": true' in as_json.output


async def test_writers_keep_writing_while_a_large_compaction_runs(
    make_store: StoreFactory, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compaction, "DELETE_BATCH", 100)  # many short transactions
    tasks, keys, writers = 50, 40, 10
    async with make_store() as store:
        for task in range(tasks):
            ts = store.task_store("dag", "run", f"t{task}")
            for round_ in range(5):
                await ts.set_many({f"k{i}": round_ for i in range(keys)}, retention=HOUR)
            await ts.set("job_id", task, retention=NEVER_EXPIRE)
        clock.advance(2 * HOUR)
        acknowledged: dict[tuple[str, str], list[int]] = {}
        during = 0
        compacting = True

        async def write(writer: int) -> None:
            nonlocal during
            # Each writer has a scope of its own, full of keys compaction is removing as
            # expired, and sets them again: the new values must survive the removal.
            ts = store.task_store("dag", "run", f"t{writer}")
            i = 0
            while compacting:
                key = f"k{i % keys}"
                await ts.set(key, [writer, i], retention=NEVER_EXPIRE)
                acknowledged[(ts.scope.task_id, key)] = [writer, i]
                during += 1
                i += 1

        async with anyio.create_task_group() as tg:
            for writer in range(writers):
                tg.start_soon(write, writer)
            report = await store.compact()
            compacting = False

        assert report.keys_expired >= (tasks - writers) * keys
        assert during > writers
        for (task_id, key), value in acknowledged.items():
            assert await store.task_store("dag", "run", task_id).get(key) == value
        assert (await store.verify()).ok
        for task in range(tasks):
            assert await store.task_store("dag", "run", f"t{task}").get("job_id") == task


def test_cli_compact_removes_expired_keys_and_prints_a_table(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"

    async def seed() -> None:
        async with open_store(url) as store:
            ts = store.task_store("dag", "run", "task")
            await ts.set("lease", 1, retention=timedelta(microseconds=1))
            await ts.set("job_id", "spark-1", retention=NEVER_EXPIRE)

    anyio.run(seed)
    runner = CliRunner()

    table = runner.invoke(cli, ["compact", "--db", url])
    again = runner.invoke(cli, ["compact", "--db", url, "--json"])

    assert table.exit_code == 0, table.output
    assert "keys expired" in table.output
    assert re.search(r"keys expired\s*│\s*1 │", table.output)
    assert again.exit_code == 0, again.output
    assert '"events_removed": 0' in again.output


def test_the_blocking_facade_compacts(tmp_path: Path, clock: FakeClock) -> None:
    with open_blocking_store(f"sqlite:///{tmp_path / 'sync.db'}", clock=clock) as store:
        store.task_store("dag", "run", "task").set("k", 1, retention=HOUR)
        clock.advance(2 * HOUR)

        dry = store.compact(dry_run=True)
        report = store.compact()

    assert (dry.dry_run, dry.events_removed) == (True, 1)
    assert (report.dry_run, report.events_removed) == (False, 1)


async def test_history_refuses_only_states_the_removed_value_would_show_in(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    async with make_store() as store:
        try_1 = store.task_store("dag", "run", "task", try_number=1)
        await try_1.set("lease", "w1", retention=HOUR)  # seq 1: try 1's first write
        await try_1.set("job_id", "spark-1", retention=NEVER_EXPIRE)  # seq 2
        clock.advance(2 * HOUR)
        try_2 = store.task_store("dag", "run", "task", try_number=2)
        await try_2.set("offset", 10, retention=NEVER_EXPIRE)  # seq 3
        history = store.history(try_1.scope)
        before = await history.state(At.seq(3))

        await store.compact()

        earliest = await history.answerable_from()
        assert earliest == 3
        assert await history.state(At.seq(3)) == before
        assert await history.state(At.end_of_try(2)) == {"job_id": "spark-1", "offset": 10}
        with pytest.raises(HistoryCompactedError, match=r"earliest point .* At\.seq\(3\)"):
            await history.state(At.seq(2))
        # Try 1's first write went, but the marker says where it was: its start is known.
        assert await history.state(At.start_of_try(1)) == {}
        with pytest.raises(HistoryCompactedError, match=r"end_of_try\(1\).*At\.seq\(3\)"):
            await history.state(At.end_of_try(1))  # try 1 left lease behind: it would show
        assert [e.kind for e in await history.events()] == ["set", "set", "compacted"]
        assert [e.key for e in await history.timeline("job_id")] == ["job_id"]
        with pytest.raises(HistoryCompactedError, match=r"timeline\('lease', after_seq=1\)"):
            await history.timeline("lease")
        assert await history.timeline("lease", after_seq=1) == []
