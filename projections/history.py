"""History and time-travel of one scope: events, point-in-time states, diffs, timelines, tries.

A point-in-time state is read through indexes, never by replaying the scope: the last clear at
or before the point bounds it, and the latest event of each key between that clear and the point
gives the key's value (`LogBackend.select_markers`, `LogBackend.select_latest_per_key`).

Points resolve, per scope, to a position: the scope's last event at or before the point.

- `At.seq(p)`: the scope's last event with seq <= p.
- `At.version(v)`: the scope's event with version v (0: before its first event).
- `At.time(t)`: the scope's last event recorded at or before t.
- `At.end_of_try(n)`: try n's last write in the scope.
- `At.start_of_try(n)`: the scope's last event before try n's first write.

Expiry in a state: `At.time(t)` applies expiry as of t. `At.start_of_try(n)` applies it as of the
time try n's first write was recorded, which is what the try saw when it started. Every other
point applies it as of the recorded time of its position: what a reader saw right after that event.

Compaction contract
-------------------
Compaction appends a `Compacted` marker to every scope it removed events from, before removing
them; each says what its own compaction removed (every marker of the scope is read):

- `keys`: each key's highest removed position. `timeline(key)` is refused unless `after_seq`
  is at least that (the error names it, plus one).
- `shown`: the stretches of positions (with their recorded times) where a removed `set` was its
  key's latest event, after the last clear, with the time its value stopped showing by expiry
  (None: it showed until superseded). A state is refused when its point falls in a stretch and
  the state's expiry time is before that time.
- `tries`: per try whose writes went, its last removed write and, if its first write went, that
  one, with their times: `At.end_of_try` and `At.start_of_try` still find where they land.

A point that lands on or among removed events (`At.seq`, `At.version`) knows only the kept
events around it, so its expiry time lies between theirs; the state is refused when a kept value
expires in between (it may or may not show). Such a refusal names the next kept position.

A marker written before the per-key horizon (`per_key` False) says only "every key, before
`answerable_from_seq` (or `removed_through_seq + 1`)": states at earlier positions, timelines
reaching back before it, and the start of a try in its `first_writes_removed` are refused.

Every refusal is a `HistoryCompactedError` naming the earliest point still answerable for the
question. `events(...)` lists what the log holds, markers included, and never raises;
`tries()` summarises the events the log holds. With an archive (`eventstore.log.archive`), reads
take in the scope's archived events too, and a marker whose run the archive holds is ignored:
its events are back.

The parts: `projections.scope_reads` (the scope's reads, where a point lands), `projections.horizon`
(what compaction removed, which states that blocks), `projections.diff`, `projections.tries`.
"""

from __future__ import annotations

from typing import Any

import msgspec

from eventstore.log.backends.rows import EventFilter, EventRow
from eventstore.log.envelope import ERASED, MASKED
from eventstore.log.errors import HistoryCompactedError
from eventstore.log.events import KeySet, RecordedEvent, decode_event, to_micros
from eventstore.log.recorded import recorded_event
from projections.diff import Diff, diff_states, masked
from projections.events_query import EventQuery, EventsReader, check_limit
from projections.horizon import HorizonReader
from projections.points import At
from projections.rewind import rewind
from projections.scope_reads import Position
from projections.tries import TrySummary

__all__ = ["Diff", "History", "Position", "TrySummary", "diff_states"]


class History(HorizonReader, EventsReader):
    """The history of one scope, read from the log. Get one with `store.history(scope)`."""

    def __repr__(self) -> str:
        return f"<History of {self.scope}>"

    # States and diffs hold ERASED (eventstore.ERASED) for a value erased with its scope;
    # events and timelines carry value None and erased=True.

    async def _events(self, query: EventQuery) -> list[RecordedEvent]:
        scope_id = await self._id()
        if scope_id is None:
            return []
        return await self._recorded(
            scope_id, await self._reads.select_events(scope_id, query.where())
        )

    async def _recorded(
        self, scope_id: int, rows: list[EventRow], mask: bool = False
    ) -> list[RecordedEvent]:
        erased = await self._erased_through(scope_id) if rows else 0
        if rows and self.vault.unready(self._scope_key):
            await self.vault.ready({self._scope_key: None})
        events = [
            recorded_event(
                row, self.scope, self.vault, erased_before=erased, scope_key_=self._scope_key
            )
            for row in rows
        ]
        if mask:
            events = [msgspec.structs.replace(e, value=None) if e.sensitive else e for e in events]
        return events

    async def timeline(
        self,
        key: str,
        *,
        after_seq: int | None = None,
        limit: int | None = None,
        mask: bool = False,
    ) -> list[RecordedEvent]:
        """Every event of one key, oldest first (sets and deletes; clears are in `events`);
        page with `after_seq` and `limit`."""
        check_limit(limit)
        scope_id = await self._id()
        if scope_id is None:
            return []
        through = (await self._horizon(scope_id)).through(key)
        if through and (after_seq is None or after_seq < through):
            raise HistoryCompactedError(
                self.scope,
                f"timeline({key!r})",
                through + 1,
                f"ask for timeline({key!r}, after_seq={through}) or later",
            )
        rows = await self._reads.select_events(
            scope_id, EventFilter(key=key, after_seq=after_seq, limit=limit)
        )
        return await self._recorded(scope_id, rows, mask)

    async def resolve(self, at: At) -> Position:
        """Where `at` lands in this scope; raises NoSuchPointError for a point that never was."""
        scope_id = await self._id()
        if scope_id is None:
            return await self._resolve_empty(at)
        position, _ = await self._locate(scope_id, at)
        return position

    async def state(self, at: At, *, mask: bool = False) -> dict[str, Any]:
        """The scope's {key: value} as of `at`, expired keys left out, sorted by key.

        mask: a value written with sensitive=True reads as MASKED (for faces; see `events`).
        """
        state, sensitive = await self._state(at)
        return masked(state, sensitive) if mask else state

    async def _state(self, at: At) -> tuple[dict[str, Any], set[str]]:
        """The state as of `at`, and its keys whose values were written sensitive."""
        sensitive: set[str] = set()
        scope_id = await self._id()
        if scope_id is None:
            await self._resolve_empty(at)
            return {}, sensitive
        horizon = await self._horizon(scope_id)
        if horizon.empty:
            position, rows = await self._locate(scope_id, at)
            if position.seq == 0:
                return {}, sensitive
            if rows is None:
                rows = await self._rows(scope_id, position.seq)
            now = None if position.expiry_at is None else to_micros(position.expiry_at)
        else:
            point = await self._point(scope_id, at, horizon)
            rows = await self._rows_at(scope_id, point)
            blocked = await self._blocked(scope_id, point, rows, horizon)
            if blocked is not None:
                earliest = await self._earliest(scope_id, blocked, horizon)
                raise HistoryCompactedError(self.scope, f"state({at})", earliest)
            if not rows.latest:
                return {}, sensitive
            now = point.expiry_low
        erased = await self._erased_through(scope_id)
        if self.vault.unready(self._scope_key):
            await self.vault.ready({self._scope_key: None})
        state: dict[str, Any] = {}
        for row in sorted(rows.latest, key=lambda r: r.key or ""):
            if row.kind != "set" or (
                row.expires_at is not None and now is not None and row.expires_at <= now
            ):
                continue
            event = decode_event(row.payload)
            assert isinstance(event, KeySet)
            if event.sensitive:
                sensitive.add(event.key)
            if row.seq < erased:
                state[event.key] = ERASED
            else:
                state[event.key] = self.vault.open_event(self._scope_key, row.version, event)
        return state, sensitive

    async def diff(self, a: At, b: At, *, mask: bool = False) -> Diff:
        """What changed from the state as of `a` to the state as of `b`.

        mask: compared on the real values, then each sensitive one reads as MASKED.
        """
        old, old_sensitive = await self._state(a)
        new, new_sensitive = await self._state(b)
        diff = diff_states(old, new)
        if not mask:
            return diff
        return Diff(
            added=masked(diff.added, new_sensitive),
            removed=masked(diff.removed, old_sensitive),
            changed={
                k: (
                    MASKED if k in old_sensitive else old_value,
                    MASKED if k in new_sensitive else new_value,
                )
                for k, (old_value, new_value) in diff.changed.items()
            },
        )

    # History.rewind is projections.rewind.rewind, with this history as its first argument.
    rewind = rewind
