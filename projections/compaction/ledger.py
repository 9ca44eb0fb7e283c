"""What the last compaction planned, so that the next one reads only what changed since.

Planning a scope reads all its events; most scopes are the same at the next run. A scope's plan
depends on its events and on the time only through comparisons of the events' times with `now`
and with the horizon's cutoff (`plan_scope`: expiries passed, superseding events older than the
cutoff, events recorded before `now`). So once compaction has left a scope with nothing to
remove, the scope stays that way until either

- an event is appended to it (its version moves; a marker of another compaction is one too), or
- the time reaches its wake-up time: the earliest moment one of those comparisons flips.

The ledger keeps, per scope, the version it was settled at and that wake-up time, and the next
run skips the scope while both hold. It lives with the store that compacts, for as long as the
store is open; a new process plans every scope once.
"""

from __future__ import annotations

from collections.abc import Sequence

from eventstore.log.backends.rows import EventRow, ScopeRow

__all__ = ["Ledger", "wake_at"]


class Ledger:
    """Per scope: the version at which compaction left nothing to remove, and until when."""

    def __init__(self) -> None:
        self._settled: dict[int, tuple[int, int | None]] = {}
        self._horizon_us: int | None = None

    def settled(self, scope: ScopeRow, now: int, horizon_us: int | None) -> bool:
        """True when planning `scope` at `now` would find nothing to remove."""
        if horizon_us != self._horizon_us:
            return False
        found = self._settled.get(scope.scope_id)
        if found is None:
            return False
        version, wake = found
        return version == scope.version and (wake is None or now < wake)

    def update(self, settled: dict[int, tuple[int, int | None]], horizon_us: int | None) -> None:
        """Record a run's findings (scope id: (version, wake-up time)); what it did not plan
        again stays as it was."""
        if horizon_us != self._horizon_us:
            self._settled.clear()
            self._horizon_us = horizon_us
        self._settled.update(settled)


def wake_at(rows: Sequence[EventRow], now: int, horizon_us: int | None) -> int | None:
    """The earliest time after `now` at which planning these rows may decide differently
    (None: never, without a new event). Every comparison `plan_scope` makes is one of
    `expires_at <= now`, `recorded_at < now` and `recorded_at < now - horizon`."""
    wake: int | None = None
    for row in rows:
        if row.expires_at is not None and row.expires_at > now:
            wake = row.expires_at if wake is None else min(wake, row.expires_at)
        if row.recorded_at >= now:
            wake = row.recorded_at + 1 if wake is None else min(wake, row.recorded_at + 1)
        if horizon_us is not None and row.recorded_at + horizon_us >= now:
            later = row.recorded_at + horizon_us + 1
            wake = later if wake is None else min(wake, later)
    return wake
