"""Compaction on a schedule, inside the service's lifespan."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

import anyio
from anyio.abc import TaskStatus

from eventstore.log.errors import CompactionRunningError
from projections.compaction.report import CompactionReport

__all__ = ["SupportsCompact", "run_compaction_schedule"]

logger = logging.getLogger("tasktrail.compaction")


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
