"""Planning: what compaction removes from one scope, and the marker it leaves there.

See `projections.compaction` for the rules and the marker's contract.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Final

import msgspec

from eventstore.log.backends.rows import EventRow
from eventstore.log.events import AnyEvent, Compacted, Shown, TryHorizon
from projections.compaction.horizons import (
    answerable_from,
    key_horizons,
    last_marker,
    try_horizons,
)

__all__ = ["ScopePlan", "plan_scope", "reason"]


class ScopePlan(msgspec.Struct, kw_only=True):
    """What compaction removes from one scope, and the marker it leaves there."""

    scope_id: int
    scope_key: str = ""
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
    # The events to remove, by position; their payloads only when an archive keeps them.
    rows: list[EventRow] = msgspec.field(default_factory=list)

    @property
    def seqs(self) -> list[int]:
        """The positions to remove, ascending."""
        return [row.seq for row in self.rows]

    def marker(
        self, reason: str, horizon: datetime | None, archive: str | None = None
    ) -> Callable[[int], AnyEvent]:
        def make(seq: int) -> AnyEvent:
            return Compacted(
                reason=reason,
                events_removed=len(self.rows),
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


def plan_scope(
    rows: Sequence[EventRow], *, now: int, cutoff: int | None, payloads: bool = True
) -> ScopePlan | None:
    """Decide what goes from one scope, given all its events in position order.

    `now` and `cutoff` (now - horizon, None for no horizon) are microseconds since the epoch.
    Returns None when nothing goes. `payloads=False` leaves the removed events' payloads out
    of the plan: only an archive needs them, and a big compaction would hold them all.
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

    # An erasure (eventstore.log.vault) left its values unreadable: their sets go whatever the
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
    previous = last_marker(rows)
    if previous is not None:
        if answerable:
            answerable = max(answerable, answerable_from(previous))
        if previous.removed_from_seq:
            removed_from = min(removed_from, previous.removed_from_seq)
        removed_through = max(removed_through, previous.removed_through_seq)
        tries.update(previous.first_writes_removed)

    # A key's projection row comes from its last set, if nothing deleted or cleared it since.
    current = [(rows[i].scope_id, key, rows[i].seq) for key, i in last_set.items() if why[i]]
    keys, shown = key_horizons(rows, removed, superseded_by)
    return ScopePlan(
        keys=keys,
        shown=shown,
        clears_through_seq=max(
            (rows[i].seq for i in removed if rows[i].kind == "clear"), default=0
        ),
        tries=try_horizons(rows, removed, first_of_try),
        rows=[rows[i] if payloads else _without_payload(rows[i]) for i in removed],
        scope_id=rows[0].scope_id,
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


def _without_payload(row: EventRow) -> EventRow:
    return msgspec.structs.replace(row, payload=b"")


def reason(plan: ScopePlan) -> str:
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
