"""Compaction plans only what changed since the store's last compaction, and plans the same.

A scope the last run left with nothing to remove is not read again until it gets a new event
or a time comes when one of its events expires or falls behind the history horizon. Skipping
it never changes what compaction does: at any moment, planning with the store's ledger reports
exactly what planning every scope reports.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import anyio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore import NEVER_EXPIRE, Store, StoreConfig, open_store
from eventstore.log.backends.rows import EventFilter, EventRow
from projections.compaction import CompactionReport, compact
from tests.conftest import FakeClock
from tests.test_compaction_properties import configs, ops


class Reads:
    """Counts the scopes planning reads whole (an unfiltered select_events)."""

    def __init__(self, store: Store) -> None:
        self.scopes: list[int] = []
        select = store.backend.select_events

        async def counted(scope_id: int, where: EventFilter) -> list[EventRow]:
            if where == EventFilter():
                self.scopes.append(scope_id)
            return await select(scope_id, where)

        store.backend.select_events = counted  # type: ignore[method-assign]

    @property
    def count(self) -> int:
        taken, self.scopes = len(self.scopes), []
        return taken


async def test_a_second_compaction_reads_only_the_scopes_written_since(clock: FakeClock) -> None:
    async with open_store("memory://", clock=clock) as store:
        for run in range(5):
            ts = store.task_store("dag", f"run{run}", "task", try_number=1)
            await ts.set("offset", run, retention=timedelta(days=1))
            await ts.set("offset", run + 1, retention=NEVER_EXPIRE)
        reads = Reads(store)
        await store.compact()
        assert reads.count == 5
        await store.compact()
        assert reads.count == 0
        await store.task_store("dag", "run3", "task", try_number=1).set("more", 1)
        await store.compact()
        assert reads.count == 1


async def test_a_settled_scope_is_planned_again_once_a_value_expires(clock: FakeClock) -> None:
    async with open_store("memory://", clock=clock) as store:
        ts = store.task_store("dag", "run", "task", try_number=1)
        await ts.set("job_id", "spark-1", retention=timedelta(hours=1))
        assert (await store.compact()).events_removed == 0
        clock.advance(minutes=59)
        assert (await store.compact()).events_removed == 0
        clock.advance(minutes=1)
        report = await store.compact()
        assert report.keys_expired == 1
        assert report.events_removed == 1


async def test_a_settled_scope_is_planned_again_once_history_passes_the_horizon(
    clock: FakeClock,
) -> None:
    config = StoreConfig(history_horizon_days=7)
    async with open_store("memory://", config=config, clock=clock) as store:
        ts = store.task_store("dag", "run", "task", try_number=1)
        await ts.set("offset", 1, retention=NEVER_EXPIRE)
        await ts.set("offset", 2, retention=NEVER_EXPIRE)
        assert (await store.compact()).events_removed == 0
        clock.advance(days=7)
        assert (await store.compact()).events_removed == 0
        clock.advance(microseconds=1)
        report = await store.compact()
        assert report.superseded_events == 1


def _counts(report: CompactionReport) -> tuple[int, ...]:
    return (
        report.events_removed,
        report.keys_expired,
        report.expired_events,
        report.superseded_events,
        report.tombstones,
        report.scopes_touched,
    )


async def _play(url: str, config: StoreConfig, history: list[Any]) -> None:
    clock = FakeClock()
    async with open_store(url, config=config, clock=clock) as store:

        async def compact_both() -> None:
            # Planned with the store's ledger and without one, at the same moment.
            everything = await compact(
                store.backend, store.config, clock(), store.append, dry_run=True
            )
            assert _counts(await store.compact(dry_run=True)) == _counts(everything)
            assert _counts(await store.compact()) == _counts(everything)

        try_number = 1
        for op in history:
            task = "task" if op[0] == "advance" or op[1:2] != (1,) else "other"
            accessor = store.task_store("prop", "run", task, -1, try_number)
            match op:
                case ("set", _, key, value, retention):
                    await accessor.set(key, value, retention=retention)
                case ("set_many", _, mapping, retention):
                    await accessor.set_many(mapping, retention=retention)
                case ("delete", _, key):
                    await accessor.delete(key)
                case ("clear", _):
                    await accessor.clear()
                case ("advance", seconds):
                    clock.advance(seconds=seconds)
                case ("next_try",):
                    try_number += 1
                case ("compact",):
                    await compact_both()
        # Then time alone: values expire and history falls behind the horizon.
        for _ in range(4):
            await compact_both()
            clock.advance(seconds=10)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=configs, history=st.lists(ops, min_size=1, max_size=40))
def test_planning_with_the_ledger_finds_what_planning_every_scope_finds(
    config: StoreConfig, history: list[Any]
) -> None:
    anyio.run(_play, "memory://", config, history)


async def test_a_settled_scope_is_planned_again_once_time_passes_its_last_write(
    clock: FakeClock,
) -> None:
    config = StoreConfig(history_horizon_days=0)
    async with open_store("memory://", config=config, clock=clock) as store:
        ts = store.task_store("dag", "run", "task", try_number=1)
        await ts.set("job_id", "spark-1", retention=NEVER_EXPIRE)
        await ts.delete("job_id")
        # Only what was recorded before now goes.
        assert (await store.compact()).events_removed == 0
        clock.advance(microseconds=1)
        report = await store.compact()
        assert (report.superseded_events, report.tombstones) == (1, 1)
