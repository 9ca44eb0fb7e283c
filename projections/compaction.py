"""Compaction: the retention GC of the log.

What goes, per scope (`plan_scope`):

- every event of a key whose expiry has passed: the key's last `set` expired, whether the key is
  still in the projection (an expired row) or was deleted or cleared after it; its projection row
  goes with it;
- superseded events older than the history horizon (`StoreConfig.history_horizon_days`): a `set`
  whose key was set, deleted or cleared again before `now - horizon` (None: never);
- tombstones with nothing left to hide: a `delete` of a key none of whose earlier `set`s is
  kept, and a `clear` none of whose earlier events is kept. Removing them changes no state.

Beside the events, compaction forgets the results kept for idempotency ids recorded more than
`StoreConfig.idempotency_days` ago: a retry that late is a new write.

What never goes: the current value of a live key (so `NEVER_EXPIRE` values and asset entries
stay until they are deleted or cleared), `compacted` markers, and anything recorded at or after
the moment compaction starts. Positions and versions are never renumbered.

Every scope that loses events first gets one `Compacted` marker, appended through the log's write
path, and only then are the events removed, in short batches of their own write transactions, so
a history reader never sees a gap the scope's latest marker does not describe. The marker's
fields hold for the scope's whole compacted past; see `projections.history` for the contract
history holds them to. In short, `answerable_from_seq` (A) is the first kept event of the scope
such that:

1. every event at or after A is kept;
2. every state at or after A is exact. A removed `set` changed the states from its own position
   until the key was next set, deleted or cleared, or until its value expired (the scope's first
   event recorded at or after its expiry); a removed tombstone changed none;
3. no removed event was recorded at the same time as A;
4. no try whose first write was removed wrote at or after A (such tries are also listed in
   `first_writes_removed`, as a try still running may write again after compaction).

When no kept event qualifies, A is the marker itself. These cumulative fields stay for readers
that know only them; history reads the per-key fields (`keys`, `shown`, `tries`), which say
what this compaction removed, key by key, and refuses only the questions that need it.

With an archive (`eventstore.log.archive`), every event to remove is first written there, in one
file per compaction, fsynced, before the markers (which name the file's run) are appended.
"""

from __future__ import annotations

import bisect
import contextlib
import heapq
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Annotated, Final, Protocol

import anyio
import msgspec
from anyio.abc import TaskStatus

from eventstore.log.append import AppendRequest, AppendResult, MarkOp
from eventstore.log.archive import Archive, ArchivedEvent
from eventstore.log.backends.base import EventFilter, EventRow, LogBackend
from eventstore.log.config import StoreConfig
from eventstore.log.errors import CompactionRunningError
from eventstore.log.events import (
    AnyEvent,
    Compacted,
    Shown,
    TryHorizon,
    decode_event,
    from_micros,
    to_micros,
)
from eventstore.log.scopes import scope_from_key

__all__ = [
    "CompactionReport",
    "ScopePlan",
    "SupportsCompact",
    "compact",
    "plan_scope",
    "run_compaction_schedule",
]

logger = logging.getLogger("tasktrail.compaction")

# Events removed per write transaction, and free pages given back per step, to start with:
# each adapts so that one transaction takes about _BUDGET_SECONDS, and a concurrent append
# waits milliseconds, not seconds. (On SQLite a transaction's statements run on the event loop
# thread, so the budget also bounds how long one batch keeps the loop busy.)
DELETE_BATCH: Final = 500
RECLAIM_PAGES: Final = 256
_BUDGET_SECONDS: Final = 0.01
# Markers handed to the group-commit writer at once: a write queued behind them waits for them.
_MARKER_BATCH: Final = 8

Append = Callable[[AppendRequest], Awaitable[AppendResult]]
# progress(phase, done, total): phase is "plan" (scopes), "archive" (0, then 1 once the run's
# file is written), "mark" (markers appended), "remove"
# (events), "forget" (idempotency results) or "reclaim" (pages).
Progress = Callable[[str, int, int], None]


class CompactionReport(msgspec.Struct, frozen=True, kw_only=True):
    """What a compaction removed (or, on a dry run, would remove) and what it gave back."""

    dry_run: bool
    keys_expired: Annotated[
        int, msgspec.Meta(description="keys whose every event went because their expiry passed")
    ]
    events_removed: int
    expired_events: Annotated[int, msgspec.Meta(description="... of which: events of expired keys")]
    superseded_events: Annotated[
        int, msgspec.Meta(description="... superseded history older than the horizon")
    ]
    tombstones: Annotated[
        int, msgspec.Meta(description="... deletes and clears with nothing left to hide")
    ]
    scopes_touched: int
    markers_appended: int
    bytes_before: int
    bytes_after: Annotated[int | None, msgspec.Meta(description="null on a dry run")]
    duration_seconds: float
    horizon: Annotated[
        datetime | None,
        msgspec.Meta(description="history superseded before this went; null: all was kept"),
    ]
    idempotency_ids_forgotten: Annotated[
        int,
        msgspec.Meta(
            description="results of idempotency ids older than idempotency_days, forgotten"
        ),
    ] = 0
    archive_file: Annotated[
        str | None,
        msgspec.Meta(
            description="the archive file holding every event removed; null: no archive "
            "configured, nothing removed, or a dry run"
        ),
    ] = None
    archive_bytes: Annotated[int, msgspec.Meta(description="the archive file's size")] = 0


class ScopePlan(msgspec.Struct, kw_only=True):
    """What compaction removes from one scope, and the marker it leaves there."""

    scope_id: int
    scope_key: str = ""
    seqs: list[int]  # the positions to remove, ascending
    current: list[tuple[int, str, int]]  # projection rows to remove: (scope_id, key, seq)
    keys_expired: list[str]
    expired_events: int
    superseded_events: int
    tombstones: int
    # The marker's cumulative fields; answerable_from_seq 0 means "the marker itself".
    answerable_from_seq: int
    removed_from_seq: int
    removed_through_seq: int
    first_writes_removed: list[int]
    erased_events: int = 0  # values of an erased scope (counted in superseded_events too)
    # What went, key by key, with the clears and the tries (this compaction's only).
    keys: dict[str, int] = msgspec.field(default_factory=dict)
    shown: list[Shown] = msgspec.field(default_factory=list)
    clears_through_seq: int = 0
    tries: list[TryHorizon] = msgspec.field(default_factory=list)
    rows: list[EventRow] = msgspec.field(default_factory=list)  # the events to remove

    def marker(
        self, reason: str, horizon: datetime | None, archive: str | None = None
    ) -> Callable[[int], AnyEvent]:
        def make(seq: int) -> AnyEvent:
            return Compacted(
                reason=reason,
                events_removed=len(self.seqs),
                keys_expired=self.keys_expired,
                removed_through_seq=self.removed_through_seq,
                horizon=horizon,
                answerable_from_seq=self.answerable_from_seq or seq,
                removed_from_seq=self.removed_from_seq,
                first_writes_removed=self.first_writes_removed,
                per_key=True,
                keys=self.keys,
                shown=self.shown,
                clears_through_seq=self.clears_through_seq,
                tries=self.tries,
                archive=archive,
            )

        return make


_EXPIRED: Final = 1
_SUPERSEDED: Final = 2
_TOMBSTONE: Final = 3
_ERASED: Final = 4


def plan_scope(rows: Sequence[EventRow], *, now: int, cutoff: int | None) -> ScopePlan | None:
    """Decide what goes from one scope, given all its events in position order.

    `now` and `cutoff` (now - horizon, None for no horizon) are microseconds since the epoch.
    Returns None when nothing goes.
    """
    n = len(rows)
    if n == 0:
        return None
    # Where each set or delete is superseded: the key's next event, or the next clear.
    superseded_by: list[int | None] = [None] * n
    next_of_key: dict[str, int] = {}
    next_clear: int | None = None
    for i in range(n - 1, -1, -1):
        row = rows[i]
        if row.kind in ("set", "delete"):
            assert row.key is not None
            after = next_of_key.get(row.key)
            if after is None or (next_clear is not None and next_clear < after):
                after = next_clear
            superseded_by[i] = after
            next_of_key[row.key] = i
        elif row.kind == "clear":
            next_clear = i

    last_set: dict[str, int] = {}
    newest_of_key: dict[str, int] = {}
    for i, row in enumerate(rows):
        if row.key is not None:
            newest_of_key[row.key] = max(newest_of_key.get(row.key, 0), row.recorded_at)
            if row.kind == "set":
                last_set[row.key] = i
    expired = {
        key
        for key, i in last_set.items()
        if rows[i].expires_at is not None
        and rows[i].expires_at <= now  # type: ignore[operator]
        and newest_of_key[key] < now
    }

    # An erasure (eventstore.log.crypto) left its values unreadable: their sets go whatever the
    # horizon, superseded by the erasure's clear.
    erased_at = max((row.seq for row in rows if row.kind == "erased"), default=0)
    why = [0] * n
    for i, row in enumerate(rows):
        if row.key in expired and row.kind in ("set", "delete"):
            why[i] = _EXPIRED
        elif row.kind == "set" and row.seq < erased_at and superseded_by[i] is not None:
            why[i] = _ERASED
        elif row.kind == "set" and cutoff is not None:
            after = superseded_by[i]
            if after is not None and rows[after].recorded_at < cutoff:
                why[i] = _SUPERSEDED
    kept_set_keys: set[str] = set()
    kept_any = False
    for i, row in enumerate(rows):
        if row.kind == "compacted":
            continue
        hides_nothing = (row.kind == "delete" and row.key not in kept_set_keys) or (
            row.kind == "clear" and not kept_any
        )
        if not why[i] and row.recorded_at < now and hides_nothing:
            why[i] = _TOMBSTONE
        if not why[i]:
            kept_any = True
            if row.kind == "set":
                assert row.key is not None
                kept_set_keys.add(row.key)

    removed = [i for i in range(n) if why[i]]
    if not removed:
        return None

    # The earliest position from which every state is exact again (rule 2).
    times = [row.recorded_at for row in rows]
    marker_needed = False
    lower = 0
    for i in removed:
        row = rows[i]
        if row.kind != "set":
            continue
        end = superseded_by[i]
        if row.expires_at is not None and row.expires_at <= now:
            expired_at = bisect.bisect_left(times, row.expires_at, lo=i + 1)
            if expired_at < n and (end is None or expired_at < end):
                end = expired_at
            elif end is None:
                marker_needed = True
                continue
        assert end is not None, "a removed set is superseded or expired"
        lower = max(lower, rows[end].seq)
    # Rule 1: everything after A is kept.
    lower = max(lower, rows[removed[-1]].seq + 1)
    # Rule 4: a try whose first write went has no writes at or after A.
    first_of_try: dict[int, int] = {}
    last_of_try: dict[int, int] = {}
    for i, row in enumerate(rows):
        if row.try_number is not None and row.kind != "compacted":
            first_of_try.setdefault(row.try_number, i)
            last_of_try[row.try_number] = i
    tries_cut = sorted(t for t, i in first_of_try.items() if why[i])
    for t in tries_cut:
        lower = max(lower, rows[last_of_try[t]].seq + 1)
    # Rule 3: A was recorded after every removed event.
    newest_removed = max(times[i] for i in removed)
    answerable = 0
    if not marker_needed:
        answerable = next(
            (
                row.seq
                for i, row in enumerate(rows)
                if not why[i] and row.seq >= lower and row.recorded_at > newest_removed
            ),
            0,
        )

    removed_from = rows[removed[0]].seq
    removed_through = rows[removed[-1]].seq
    tries = set(tries_cut)
    previous = _last_marker(rows)
    if previous is not None:
        if answerable:
            answerable = max(answerable, _answerable_from(previous))
        if previous.removed_from_seq:
            removed_from = min(removed_from, previous.removed_from_seq)
        removed_through = max(removed_through, previous.removed_through_seq)
        tries.update(previous.first_writes_removed)

    # A key's projection row comes from its last set, if nothing deleted or cleared it since.
    current = [(rows[i].scope_id, key, rows[i].seq) for key, i in last_set.items() if why[i]]
    keys, shown = _key_horizons(rows, removed, superseded_by)
    return ScopePlan(
        keys=keys,
        shown=shown,
        clears_through_seq=max(
            (rows[i].seq for i in removed if rows[i].kind == "clear"), default=0
        ),
        tries=_try_horizons(rows, removed, first_of_try),
        rows=[rows[i] for i in removed],
        scope_id=rows[0].scope_id,
        seqs=[rows[i].seq for i in removed],
        current=current,
        keys_expired=sorted(expired),
        expired_events=sum(1 for i in removed if why[i] == _EXPIRED),
        superseded_events=sum(1 for i in removed if why[i] in (_SUPERSEDED, _ERASED)),
        erased_events=sum(1 for i in removed if why[i] == _ERASED),
        tombstones=sum(1 for i in removed if why[i] == _TOMBSTONE),
        answerable_from_seq=answerable,
        removed_from_seq=removed_from,
        removed_through_seq=removed_through,
        first_writes_removed=sorted(tries),
    )


# Stretches where removed values showed, kept in a marker: beyond this many, the oldest are
# merged into one that says "may have shown throughout" (history refuses a little more).
MAX_SHOWN: Final = 32


def _key_horizons(
    rows: Sequence[EventRow], removed: Sequence[int], superseded_by: Sequence[int | None]
) -> tuple[dict[str, int], list[Shown]]:
    """Each key's highest removed position, and the stretches where a removed `set` was its
    key's latest event (from the set until its key's next event or the next clear), with
    their expiry: per key first, then those of all keys that behave alike as one."""
    through: dict[str, int] = {}
    per_key: dict[str, list[Shown]] = {}
    for i in removed:
        row = rows[i]
        if row.key is None:
            continue
        through[row.key] = row.seq
        if row.kind != "set":
            continue
        end = superseded_by[i]
        until_at = None if end is None else rows[end].recorded_at
        # A state within the stretch has its expiry applied as of a time no later than the
        # superseding event's: a value expiring after that showed throughout.
        expired_at = row.expires_at
        if expired_at is not None and until_at is not None and expired_at > until_at:
            expired_at = None
        span = Shown(
            from_seq=row.seq,
            from_at=from_micros(row.recorded_at),
            until_seq=0 if end is None else rows[end].seq,
            until_at=None if until_at is None else from_micros(until_at),
            expired_at=None if expired_at is None else from_micros(expired_at),
        )
        spans = per_key.setdefault(row.key, [])
        last = spans[-1] if spans else None
        if (
            last is not None
            and last.until_seq == span.from_seq
            and last.expired_at is None
            and (span.expired_at is None or span.expired_at > span.from_at)
        ):
            # The key's earlier stretch showed throughout, and this one starts where it ended
            # and shows at least until a time after that: one stretch.
            spans[-1] = msgspec.structs.replace(span, from_seq=last.from_seq, from_at=last.from_at)
        else:
            spans.append(span)
    # Across keys: overlapping stretches with the same expiry show exactly where their union
    # does (a state in it shows one of the values, under the same condition).
    merged: list[Shown] = []
    for span in sorted((s for spans in per_key.values() for s in spans), key=_from):
        last = merged[-1] if merged else None
        if (
            last is not None
            and last.expired_at == span.expired_at
            and (last.until_seq == 0 or span.from_seq <= last.until_seq)
        ):
            if last.until_seq != 0 and (span.until_seq == 0 or span.until_seq > last.until_seq):
                merged[-1] = msgspec.structs.replace(
                    last, until_seq=span.until_seq, until_at=span.until_at
                )
        else:
            merged.append(span)
    if len(merged) > MAX_SHOWN:
        merged = [*_merged(merged[: -MAX_SHOWN + 2]), *merged[-MAX_SHOWN + 2 :]]
    return {key: through[key] for key in sorted(through)}, merged


def _from(span: Shown) -> int:
    return span.from_seq


def _merged(spans: Sequence[Shown]) -> list[Shown]:
    """At most two stretches covering these, showing wherever any of them did (never less):
    one for those some event superseded, one for those that expired (never "forever")."""
    out = []
    bounded = [s for s in spans if s.until_seq]
    if bounded:
        last = max(bounded, key=lambda s: s.until_seq)
        expiries = [s.expired_at for s in bounded]
        out.append(
            Shown(
                from_seq=bounded[0].from_seq,
                from_at=bounded[0].from_at,
                until_seq=last.until_seq,
                until_at=last.until_at,
                expired_at=None if None in expiries else max(e for e in expiries if e),
            )
        )
    unbounded = [s for s in spans if not s.until_seq]
    if unbounded:
        out.append(
            Shown(
                from_seq=unbounded[0].from_seq,
                from_at=unbounded[0].from_at,
                expired_at=max(s.expired_at for s in unbounded if s.expired_at),
            )
        )
    return out


def _try_horizons(
    rows: Sequence[EventRow], removed: Sequence[int], first_of_try: dict[int, int]
) -> list[TryHorizon]:
    gone = set(removed)
    last: dict[int, int] = {}
    for i in removed:
        number = rows[i].try_number
        if number is not None and rows[i].kind != "compacted":
            last[number] = i
    horizons = []
    for number in sorted(last):
        first = first_of_try[number]
        first_gone = first in gone
        horizons.append(
            TryHorizon(
                try_number=number,
                last_seq=rows[last[number]].seq,
                last_at=from_micros(rows[last[number]].recorded_at),
                first_seq=rows[first].seq if first_gone else 0,
                first_at=from_micros(rows[first].recorded_at) if first_gone else None,
            )
        )
    return horizons


def _last_marker(rows: Sequence[EventRow]) -> Compacted | None:
    for row in reversed(rows):
        if row.kind == "compacted":
            event = decode_event(row.payload)
            assert isinstance(event, Compacted)
            return event
    return None


def _answerable_from(marker: Compacted) -> int:
    if marker.answerable_from_seq:
        return marker.answerable_from_seq
    return marker.removed_through_seq + 1 if marker.removed_through_seq else 0


def _reason(plan: ScopePlan) -> str:
    parts = []
    if plan.expired_events:
        parts.append(f"{len(plan.keys_expired)} expired keys ({plan.expired_events} events)")
    if plan.erased_events:
        parts.append(f"{plan.erased_events} values of an erased scope")
    if plan.superseded_events > plan.erased_events:
        older = plan.superseded_events - plan.erased_events
        parts.append(f"{older} superseded events older than the horizon")
    if plan.tombstones:
        parts.append(f"{plan.tombstones} deletes and clears with nothing left to hide")
    return "; ".join(parts)


async def compact(
    backend: LogBackend,
    config: StoreConfig,
    now: datetime,
    append: Append,
    *,
    dry_run: bool = False,
    progress: Progress | None = None,
    delete_batch: int | None = None,
    reclaim_pages: int | None = None,
    archive: Archive | None = None,
) -> CompactionReport:
    """Plan and run one compaction of the whole log; `append` is the store's write path.

    Safe while writes go on: events are only ever removed by position, projection rows only if
    they still come from the removed event, and each batch is one short write transaction.

    With an archive, every event to remove is written there first, durably, in one file for
    the run; the markers name that file, and only then does anything leave the log.
    """
    started = time.monotonic()
    report = _Progress(progress)
    now_us = to_micros(now)
    horizon: datetime | None = None
    cutoff: int | None = None
    if config.history_horizon_days is not None:
        horizon = now - timedelta(days=config.history_horizon_days)
        cutoff = to_micros(horizon)
    forget_before: int | None = None
    if config.idempotency_days is not None:
        forget_before = to_micros(now - timedelta(days=config.idempotency_days))
    bytes_before = await backend.select_storage_bytes()

    scopes = await backend.select_all_scopes()
    plans: list[ScopePlan] = []
    for done, scope in enumerate(scopes, 1):
        rows = await backend.select_events(scope.scope_id, EventFilter())
        plan = plan_scope(rows, now=now_us, cutoff=cutoff)
        if plan is not None:
            plan.scope_key = scope.scope_key
            plans.append(plan)
        report("plan", done, len(scopes))

    bytes_after: int | None = None
    forgotten = 0
    archive_file: str | None = None
    archive_bytes = 0
    if dry_run:
        if forget_before is not None:
            forgotten = await backend.count_idempotent(recorded_before=forget_before)
    else:
        manifest = None
        if archive is not None and plans:
            report("archive", 0, 1)
            # Made and written in a worker thread: hundreds of thousands of lines to encode.
            manifest = await anyio.to_thread.run_sync(
                lambda: archive.write_run(_archived(plans), now)
            )
            report("archive", 1, 1)
        if manifest is not None:
            archive_file, archive_bytes = manifest.file, manifest.bytes
        run = None if manifest is None else manifest.run
        await _append_markers(plans, append, horizon, report, run)
        await _remove(backend, plans, delete_batch or DELETE_BATCH, report)
        if forget_before is not None:
            forgotten = await _forget(backend, forget_before, delete_batch or DELETE_BATCH, report)
        await _reclaim(backend, reclaim_pages or RECLAIM_PAGES, report)
        bytes_after = await backend.select_storage_bytes()

    return CompactionReport(
        dry_run=dry_run,
        keys_expired=sum(len(p.keys_expired) for p in plans),
        events_removed=sum(len(p.seqs) for p in plans),
        expired_events=sum(p.expired_events for p in plans),
        superseded_events=sum(p.superseded_events for p in plans),
        tombstones=sum(p.tombstones for p in plans),
        scopes_touched=len(plans),
        markers_appended=0 if dry_run else len(plans),
        bytes_before=bytes_before,
        bytes_after=bytes_after,
        duration_seconds=time.monotonic() - started,
        horizon=horizon,
        idempotency_ids_forgotten=forgotten,
        archive_file=archive_file,
        archive_bytes=archive_bytes,
    )


def _archived(plans: Sequence[ScopePlan]) -> list[ArchivedEvent]:
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


class _Progress:
    def __init__(self, progress: Progress | None) -> None:
        self._progress = progress

    def __call__(self, phase: str, done: int, total: int) -> None:
        if self._progress is not None:
            self._progress(phase, done, total)


async def _append_markers(
    plans: Sequence[ScopePlan],
    append: Append,
    horizon: datetime | None,
    report: _Progress,
    archive: str | None = None,
) -> None:
    """One marker per scope, before any of its events goes, through group commit."""

    async def one(plan: ScopePlan) -> None:
        await append(
            AppendRequest(
                scope=scope_from_key(plan.scope_key),
                ops=[MarkOp(plan.marker(_reason(plan), horizon, archive))],
                actor="system",
            )
        )

    for start in range(0, len(plans), _MARKER_BATCH):
        async with anyio.create_task_group() as tg:
            for plan in plans[start : start + _MARKER_BATCH]:
                tg.start_soon(one, plan)
        report("mark", min(start + _MARKER_BATCH, len(plans)), len(plans))


async def _remove(
    backend: LogBackend, plans: Sequence[ScopePlan], batch: int, report: _Progress
) -> None:
    # Ascending positions: at every commit in between, the log still folds to the projection
    # (a key's last event, the one its projection row comes from, goes in the same batch as
    # the row). Merged lazily, so no long stretch of CPU work keeps the loop from the writers.
    total = sum(len(plan.seqs) for plan in plans)
    seqs = heapq.merge(*(plan.seqs for plan in plans))
    rows_at = {row[2]: row for plan in plans for row in plan.current}
    size = _BatchSize(batch)
    done = 0
    while chunk := list(itertools.islice(seqs, size.next)):
        current = [rows_at[s] for s in chunk if s in rows_at]
        with size.timed():
            async with backend.write() as tx:
                await tx.delete_events(chunk)
                if current:
                    await tx.delete_current_at(current)
        done += len(chunk)
        report("remove", done, total)


async def _forget(backend: LogBackend, before: int, batch: int, report: _Progress) -> int:
    """Forget the idempotency results recorded before `before`, in short transactions."""
    total = await backend.count_idempotent(recorded_before=before)
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


async def _reclaim(backend: LogBackend, pages: int, report: _Progress) -> None:
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


class SupportsCompact(Protocol):
    async def compact(self, dry_run: bool = False) -> CompactionReport: ...


async def run_compaction_schedule(
    store: SupportsCompact,
    interval: float,
    on_report: Callable[[CompactionReport], None] | None = None,
    *,
    on_error: Callable[[Exception], None] | None = None,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Compact every `interval` seconds until cancelled; start it with `tg.start`.

    A failed compaction is logged, handed to `on_error`, and retried at the next tick; what it
    removed stays removed and the markers it left keep history honest. When another process
    or replica is compacting the same database (`CompactionRunningError`), this tick is
    skipped: that compaction does the work. Cancelling the schedule mid-compaction is safe:
    compaction removes events in short transactions of their own, each committed or rolled
    back whole.
    """
    if interval <= 0:
        raise ValueError(f"the compaction interval must be > 0 seconds, got {interval}")
    task_status.started()
    while True:
        await anyio.sleep(interval)
        try:
            result = await store.compact()
        except CompactionRunningError as error:
            logger.info("scheduled compaction skipped: %s", error)
            if on_error is not None:
                on_error(error)
            continue
        except Exception as error:
            logger.exception("scheduled compaction failed; retrying in %s s", interval)
            if on_error is not None:
                on_error(error)
            continue
        logger.info(
            "compaction removed %d events (%d expired keys) from %d scopes in %.2f s",
            result.events_removed,
            result.keys_expired,
            result.scopes_touched,
            result.duration_seconds,
        )
        if on_report is not None:
            on_report(result)
