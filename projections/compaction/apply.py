"""Applying a compaction's plans: the archive file, the markers, then the removal in short
write transactions, the forgetting of old idempotency results and the reclaiming of space."""

from __future__ import annotations

import contextlib
import heapq
import itertools
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import datetime
from typing import Final

import anyio
import msgspec

from eventstore.log.archive import ArchivedEvent
from eventstore.log.backends.base import LogBackend
from eventstore.log.requests import AppendRequest, AppendResult, MarkOp
from eventstore.log.scopes import scope_from_key
from projections.compaction.plan import ScopePlan, reason

__all__ = [
    "Append",
    "Progress",
    "Reporter",
    "append_markers",
    "archived",
    "forget",
    "reclaim",
    "remove",
]

# Each batch adapts so that one transaction takes about _BUDGET_SECONDS, and a concurrent
# append waits milliseconds, not seconds. (On SQLite a transaction's statements run on the
# event loop thread, so the budget also bounds how long one batch keeps the loop busy.)
_BUDGET_SECONDS: Final = 0.01
# Markers handed to the group-commit writer at once: a write queued behind them waits for them.
_MARKER_BATCH: Final = 8

Append = Callable[[AppendRequest], Awaitable[AppendResult]]
# progress(phase, done, total): phase is "plan" (scopes), "archive" (0, then 1 once the run's
# file is written), "mark" (markers appended), "remove"
# (events), "forget" (idempotency results) or "reclaim" (pages).
Progress = Callable[[str, int, int], None]


def archived(plans: Sequence[ScopePlan]) -> list[ArchivedEvent]:
    """The events to archive. Made in a worker thread: the GIL is handed back after each scope,
    so the event loop's writers are not kept waiting for it (see eventstore.log.archive)."""
    events: list[ArchivedEvent] = []
    for plan in plans:
        events.extend(
            ArchivedEvent(
                seq=row.seq,
                scope=plan.scope_key,
                version=row.version,
                kind=row.kind,
                key=row.key,
                expires_at=row.expires_at,
                recorded_at=row.recorded_at,
                try_number=row.try_number,
                actor=row.actor,
                event=msgspec.Raw(row.payload),
            )
            for row in plan.rows
        )
        time.sleep(0)
    return events


class Reporter:
    def __init__(self, progress: Progress | None) -> None:
        self._progress = progress

    def __call__(self, phase: str, done: int, total: int) -> None:
        if self._progress is not None:
            self._progress(phase, done, total)


async def append_markers(
    plans: Sequence[ScopePlan],
    append: Append,
    horizon: datetime | None,
    report: Reporter,
    archive: str | None = None,
) -> dict[int, int]:
    """One marker per scope, before any of its events goes, through group commit; returns
    each scope's version after its marker."""
    versions: dict[int, int] = {}

    async def one(plan: ScopePlan) -> None:
        result = await append(
            AppendRequest(
                scope=scope_from_key(plan.scope_key),
                ops=[MarkOp(plan.marker(reason(plan), horizon, archive))],
                actor="system",
            )
        )
        versions[plan.scope_id] = result.version

    for start in range(0, len(plans), _MARKER_BATCH):
        async with anyio.create_task_group() as tg:
            for plan in plans[start : start + _MARKER_BATCH]:
                tg.start_soon(one, plan)
        report("mark", min(start + _MARKER_BATCH, len(plans)), len(plans))
    return versions


async def remove(
    backend: LogBackend, plans: Sequence[ScopePlan], batch: int, report: Reporter
) -> None:
    # Ascending positions: at every commit in between, the log still folds to the projection
    # (a key's last event, the one its projection row comes from, goes in the same batch as
    # the row). Merged lazily, so no long stretch of CPU work keeps the loop from the writers.
    total = sum(len(plan.rows) for plan in plans)
    seqs = heapq.merge(*((row.seq for row in plan.rows) for plan in plans))
    rows_at = {row[2]: row for plan in plans for row in plan.current}
    size = _BatchSize(batch)
    done = 0
    while chunk := list(itertools.islice(seqs, size.next)):
        current = [rows_at[s] for s in chunk if s in rows_at]
        with size.timed():
            async with backend.write() as tx:
                await tx.delete_events(chunk)
                if current:
                    await tx.delete_current(keys_at=current)
        done += len(chunk)
        report("remove", done, total)


async def forget(backend: LogBackend, before: int, batch: int, report: Reporter) -> int:
    """Forget the idempotency results recorded before `before`, in short transactions."""
    total = (await backend.select_storage(idempotent_before=before)).idempotent_before
    size = _BatchSize(batch)
    done = 0
    while done < total:
        limit = size.next
        with size.timed():
            async with backend.write() as tx:
                gone = await tx.delete_idempotent(recorded_before=before, limit=limit)
        done += gone
        report("forget", min(done, total), total)
        if gone < limit:
            break
    return done


async def reclaim(backend: LogBackend, pages: int, report: Reporter) -> None:
    size = _BatchSize(pages)
    total = None
    given = 0
    while True:
        step = size.next
        with size.timed():
            left = await backend.reclaim_space(step)
        given += step
        if total is None:
            total = left + step
        report("reclaim", min(given, total), total)
        if left == 0:
            break
    await backend.checkpoint()


class _BatchSize:
    """A batch size that keeps each write transaction near a time budget: halved after a slow
    batch, grown after a quick one, within [start / 8, start * 4]."""

    def __init__(self, start: int) -> None:
        self.next = start
        self._low = max(1, start // 8)
        self._high = start * 4

    @contextlib.contextmanager
    def timed(self) -> Iterator[None]:
        started = time.perf_counter()
        yield
        took = time.perf_counter() - started
        if took > _BUDGET_SECONDS:
            self.next = max(self._low, self.next // 2)
        elif took < _BUDGET_SECONDS / 3:
            self.next = min(self._high, self.next + self.next // 4 + 1)
