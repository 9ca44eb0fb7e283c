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

Planning reads only the scopes that may have changed since the store's last compaction (see
`projections.compaction.ledger`).

The modules: `plan` (what goes from one scope), `horizons` (the marker's per-key fields),
`ledger` (what the last run found), `apply` (archive, markers, removal, reclaiming), `report`
and `schedule`.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Final

import anyio

from eventstore.log.archive import Archive
from eventstore.log.backends.base import LogBackend
from eventstore.log.backends.rows import EventFilter
from eventstore.log.config import StoreConfig
from eventstore.log.events import to_micros
from projections.compaction.apply import (
    Append,
    Progress,
    Reporter,
    append_markers,
    archived,
    forget,
    reclaim,
    remove,
)
from projections.compaction.ledger import Ledger, wake_at
from projections.compaction.plan import ScopePlan, plan_scope
from projections.compaction.report import CompactionReport
from projections.compaction.schedule import SupportsCompact, run_compaction_schedule

__all__ = [
    "CompactionReport",
    "Ledger",
    "Progress",
    "ScopePlan",
    "SupportsCompact",
    "compact",
    "plan_scope",
    "run_compaction_schedule",
]

# Events removed per write transaction, and free pages given back per step, to start with;
# each adapts to a time budget (see `projections.compaction.apply`).
DELETE_BATCH: Final = 500
RECLAIM_PAGES: Final = 256


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
    ledger: Ledger | None = None,
) -> CompactionReport:
    """Plan and run one compaction of the whole log; `append` is the store's write path.

    Safe while writes go on: events are only ever removed by position, projection rows only if
    they still come from the removed event, and each batch is one short write transaction.

    With an archive, every event to remove is written there first, durably, in one file for
    the run; the markers name that file, and only then does anything leave the log.

    With a ledger (the store keeps one), scopes the last run left settled are not read again
    until they change or their wake-up time comes; a completed run updates it.
    """
    started = time.monotonic()
    report = Reporter(progress)
    now_us = to_micros(now)
    horizon: datetime | None = None
    cutoff: int | None = None
    horizon_us: int | None = None
    if config.history_horizon_days is not None:
        horizon = now - timedelta(days=config.history_horizon_days)
        cutoff = to_micros(horizon)
        horizon_us = now_us - cutoff
    forget_before: int | None = None
    if config.idempotency_days is not None:
        forget_before = to_micros(now - timedelta(days=config.idempotency_days))
    # A dry run counts the idempotency results it would forget in the same read.
    counted = forget_before if dry_run else None
    storage = await backend.select_storage(idempotent_before=counted)
    bytes_before = storage.bytes

    scopes = await backend.select_scopes()
    plans: list[ScopePlan] = []
    # Scopes this run leaves with nothing to remove: (version, wake-up time). A planned scope
    # is settled at its marker's version once the plan is applied.
    settled: dict[int, tuple[int, int | None]] = {}
    planned: dict[int, tuple[int, int | None]] = {}
    for done, scope in enumerate(scopes, 1):
        if ledger is not None and ledger.settled(scope, now_us, horizon_us):
            report("plan", done, len(scopes))
            continue
        rows = await backend.select_events(scope.scope_id, EventFilter())
        plan = plan_scope(rows, now=now_us, cutoff=cutoff, payloads=archive is not None)
        if plan is None:
            settled[scope.scope_id] = (scope.version, wake_at(rows, now_us, horizon_us))
        else:
            plan.scope_key = scope.scope_key
            plans.append(plan)
            gone = {row.seq for row in plan.rows}
            kept = [row for row in rows if row.seq not in gone]
            # Planning what is left finds nothing more (each rule sees the removals of the
            # others); checked rather than assumed, as a settled scope is skipped.
            if plan_scope(kept, now=now_us, cutoff=cutoff, payloads=False) is None:
                planned[scope.scope_id] = (scope.version, wake_at(kept, now_us, horizon_us))
        report("plan", done, len(scopes))

    bytes_after: int | None = None
    forgotten = 0
    archive_file: str | None = None
    archive_bytes = 0
    if dry_run:
        forgotten = storage.idempotent_before
    else:
        manifest = None
        if archive is not None and plans:
            report("archive", 0, 1)
            # Made and written in a worker thread: hundreds of thousands of lines to encode.
            manifest = await anyio.to_thread.run_sync(
                lambda: archive.write_run(archived(plans), now)
            )
            report("archive", 1, 1)
        if manifest is not None:
            archive_file, archive_bytes = manifest.file, manifest.bytes
        run = None if manifest is None else manifest.run
        versions = await append_markers(plans, append, horizon, report, run)
        for scope_id, (version, wake) in planned.items():
            # Settled only if the marker came right after what was planned: no write between.
            if versions.get(scope_id) == version + 1:
                settled[scope_id] = (version + 1, wake)
        await remove(backend, plans, delete_batch or DELETE_BATCH, report)
        if forget_before is not None:
            forgotten = await forget(backend, forget_before, delete_batch or DELETE_BATCH, report)
        await reclaim(backend, reclaim_pages or RECLAIM_PAGES, report)
        bytes_after = (await backend.select_storage()).bytes
    if ledger is not None:
        ledger.update(settled, horizon_us)

    return CompactionReport(
        dry_run=dry_run,
        keys_expired=sum(len(p.keys_expired) for p in plans),
        events_removed=sum(len(p.rows) for p in plans),
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
