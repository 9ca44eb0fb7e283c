"""History and time-travel of one scope: events, point-in-time states, diffs, timelines, tries.

A point-in-time state is read through indexes, never by replaying the scope: the last clear at
or before the point bounds it, and the latest event of each key between that clear and the point
gives the key's value (`LogBackend.select_last_scope_event`, `LogBackend.select_latest_per_key`).

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
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import msgspec

from eventstore.log.append import AppendRequest, AppendResult, recorded_event
from eventstore.log.archive import Archive
from eventstore.log.backends.base import EventFilter, EventRow, LogBackend, ScopeRow
from eventstore.log.crypto import ERASED, MASKED, Vault
from eventstore.log.errors import HistoryCompactedError, NoSuchPointError
from eventstore.log.events import (
    EVENT_KINDS,
    Compacted,
    KeySet,
    RecordedEvent,
    Shown,
    TryHorizon,
    decode_event,
    from_micros,
    to_micros,
)
from eventstore.log.scopes import Scope, scope_key
from projections.archived import ArchivedReads
from projections.points import At

if TYPE_CHECKING:
    from projections.rewind import RewindResult

__all__ = ["Diff", "History", "Position", "TrySummary"]

_PAGE = 5000


class Position(msgspec.Struct, frozen=True, kw_only=True):
    """Where a point lands in one scope.

    `seq` and `version` are those of the scope's last event at or before the point (0 when there
    is none); `expiry_at` is the moment expiry is applied as of in the state there.
    """

    seq: int
    version: int
    recorded_at: datetime | None
    expiry_at: datetime | None


class Diff(msgspec.Struct, frozen=True, kw_only=True):
    """What changed between two states: keys added, removed, and changed as (old, new)."""

    added: dict[str, Any]
    removed: dict[str, Any]
    changed: dict[str, tuple[Any, Any]]

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)


class TrySummary(msgspec.Struct, frozen=True, kw_only=True):
    """One try's writes to a scope."""

    try_number: int
    first_seq: int
    last_seq: int
    first_write_at: datetime
    last_write_at: datetime
    writes: int
    keys: list[str]  # keys set or deleted, sorted


class History:
    """The history of one scope, read from the log. Get one with `store.history(scope)`."""

    def __init__(
        self,
        backend: LogBackend,
        scope: Scope,
        vault: Vault | None = None,
        archive: Archive | None = None,
        *,
        append: Callable[[AppendRequest], Awaitable[AppendResult]] | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.backend = backend
        self._scope_key = scope_key(scope)
        # With an archive, every history read takes in the scope's archived events too.
        self._archived = (
            None if archive is None else ArchivedReads(backend, archive, self._scope_key)
        )
        self._reads: _Reads = backend if self._archived is None else self._archived
        self.scope = scope
        self.vault = vault or Vault()
        self._append = append  # the store's write path, for rewind
        self._clock = clock
        self._scope_id: int | None = None

    def __repr__(self) -> str:
        return f"<History of {self.scope}>"

    # States and diffs hold ERASED (eventstore.ERASED) for a value erased with its scope;
    # events and timelines carry value None and erased=True.

    async def events(
        self,
        key: str | None = None,
        kinds: Iterable[str] | None = None,
        try_number: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after_seq: int | None = None,
        limit: int | None = None,
        *,
        mask: bool = False,
    ) -> list[RecordedEvent]:
        """The scope's events, oldest first, filtered; page with `after_seq` and `limit`.

        mask: a value written with sensitive=True reads as None (the event says sensitive=True),
        for faces showing history to readers who may not see it.
        """
        kind_set = None
        if kinds is not None:
            kind_set = frozenset([kinds] if isinstance(kinds, str) else kinds)
            unknown = sorted(kind_set - set(EVENT_KINDS))
            if unknown:
                raise ValueError(f"unknown event kinds {unknown}; use some of {list(EVENT_KINDS)}")
        if limit is not None and (type(limit) is not int or limit < 0):
            raise ValueError(f"limit must be an int >= 0 or None, got {limit!r}")
        since_us = None if since is None else to_micros(_aware("since", since))
        until_us = None if until is None else to_micros(_aware("until", until))
        scope_id = await self._id()
        if scope_id is None:
            return []
        rows = await self._reads.select_events(
            scope_id,
            EventFilter(
                key=key,
                kinds=kind_set,
                try_number=try_number,
                since=since_us,
                until=until_us,
                after_seq=after_seq,
                limit=limit,
            ),
        )
        return await self._recorded(scope_id, rows, mask)

    async def _recorded(
        self, scope_id: int, rows: list[EventRow], mask: bool = False
    ) -> list[RecordedEvent]:
        erased = await self._erased_through(scope_id) if rows else 0
        events = [
            recorded_event(
                row, self.scope, self.vault, erased_before=erased, scope_key_=self._scope_key
            )
            for row in rows
        ]
        if mask:
            events = [msgspec.structs.replace(e, value=None) if e.sensitive else e for e in events]
        return events

    async def _erased_through(self, scope_id: int) -> int:
        """The position of the scope's last erasure; every value before it reads as erased."""
        self.vault.refresh()  # an erasure by another process destroyed keys this one holds
        marker = await self._reads.select_last_scope_event(scope_id, "erased")
        return 0 if marker is None else marker.seq

    async def timeline(
        self, key: str, *, after_seq: int | None = None, mask: bool = False
    ) -> list[RecordedEvent]:
        """Every event of one key, oldest first (sets and deletes; clears are in `events`)."""
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
        rows = await self._reads.select_events(scope_id, EventFilter(key=key, after_seq=after_seq))
        return await self._recorded(scope_id, rows, mask)

    async def resolve(self, at: At) -> Position:
        """Where `at` lands in this scope; raises NoSuchPointError for a point that never was."""
        scope_id = await self._id()
        if scope_id is None:
            return await self._resolve_empty(at)
        position, _ = await self._locate(scope_id, at)
        return position

    async def _through_version(self, scope_id: int, at: At) -> EventRow | None:
        """The last event at or before version `at.number`; NoSuchPointError past the head."""
        row = await self._last(scope_id, EventFilter(through_version=at.number))
        head = await self._last(scope_id, EventFilter())
        if head is not None and at.number > head.version:
            raise NoSuchPointError(self.scope, str(at), f"the scope is at version {head.version}")
        return row

    async def _locate(self, scope_id: int, at: At) -> tuple[Position, _Rows | None]:
        """The position of `at`, and for At.seq the rows of the state there, found on the way."""
        row: EventRow | None
        expiry: int | None = None
        rows: _Rows | None = None
        match at.kind:
            case "seq":
                row, rows = await self._last_through(scope_id, at.number)
            case "version":
                row = await self._through_version(scope_id, at)
            case "time":
                assert at.moment is not None
                expiry = to_micros(at.moment)
                row = await self._last(scope_id, EventFilter(until=expiry))
            case "end_of_try":
                row = await self._last(scope_id, EventFilter(try_number=at.number))
                if row is None:
                    raise await self._no_try(scope_id, at)
            case "start_of_try":
                first = await self._reads.select_events(
                    scope_id, EventFilter(try_number=at.number, limit=1)
                )
                if not first:
                    raise await self._no_try(scope_id, at)
                expiry = first[0].recorded_at
                row, rows = await self._last_through(scope_id, first[0].seq - 1)
        if row is None:
            position = Position(
                seq=0,
                version=0,
                recorded_at=None,
                expiry_at=None if expiry is None else from_micros(expiry),
            )
        else:
            position = Position(
                seq=row.seq,
                version=row.version,
                recorded_at=from_micros(row.recorded_at),
                expiry_at=from_micros(row.recorded_at if expiry is None else expiry),
            )
        return position, rows

    async def _last_through(self, scope_id: int, seq: int) -> tuple[EventRow | None, _Rows]:
        """The scope's last event at or before `seq`, and the rows of the state there.

        That event is the latest of: the last clear, the last marker, and each key's latest
        event after that clear. Those are index seeks, and the state needs them anyway.
        """
        rows = await self._rows(scope_id, seq)
        marker = await self._reads.select_last_scope_event(scope_id, "compacted", through_seq=seq)
        candidates = [r for r in (rows.clear, marker) if r is not None] + rows.latest
        return max(candidates, key=lambda r: r.seq, default=None), rows

    async def _rows(self, scope_id: int, through_seq: int) -> _Rows:
        clear = await self._reads.select_last_scope_event(
            scope_id, "clear", through_seq=through_seq
        )
        latest = await self._reads.select_latest_per_key(
            scope_id, after_seq=0 if clear is None else clear.seq, through_seq=through_seq
        )
        return _Rows(clear, latest)

    async def state(self, at: At, *, mask: bool = False) -> dict[str, Any]:
        """The scope's {key: value} as of `at`, expired keys left out, sorted by key.

        mask: a value written with sensitive=True reads as MASKED (for faces; see `events`).
        """
        state, sensitive = await self._state(at)
        return _masked(state, sensitive) if mask else state

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
            rows = await self._rows(scope_id, point.through)
            blocked = await self._blocked(scope_id, point, rows, horizon)
            if blocked is not None:
                earliest = await self._earliest(scope_id, blocked, horizon)
                raise HistoryCompactedError(self.scope, f"state({at})", earliest)
            if not rows.latest:
                return {}, sensitive
            now = point.expiry_low
        erased = await self._erased_through(scope_id)
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
            added=_masked(diff.added, new_sensitive),
            removed=_masked(diff.removed, old_sensitive),
            changed={
                k: (
                    MASKED if k in old_sensitive else old_value,
                    MASKED if k in new_sensitive else new_value,
                )
                for k, (old_value, new_value) in diff.changed.items()
            },
        )

    async def tries(self) -> list[TrySummary]:
        """One summary per try that wrote to the scope, in try order."""
        scope_id = await self._id()
        if scope_id is None:
            return []
        found: dict[int, _TryCounter] = {}
        after = 0
        while True:
            rows = await self._reads.select_events(
                scope_id, EventFilter(after_seq=after, limit=_PAGE)
            )
            for row in rows:
                if row.try_number is not None:
                    counter = found.get(row.try_number)
                    if counter is None:
                        counter = found[row.try_number] = _TryCounter(row)
                    counter.add(row)
            if len(rows) < _PAGE:
                break
            after = rows[-1].seq
        return [found[n].summary(n) for n in sorted(found)]

    async def rewind(
        self,
        at: At,
        *,
        try_number: int | None = None,
        actor: str = "system",
        expected_version: int | None = None,
        dry_run: bool = False,
    ) -> RewindResult:
        """Append, in one transaction, the sets and deletes that make the current values equal
        `state(at)`; see `projections.rewind`. `dry_run=True` plans and writes nothing."""
        from projections.rewind import rewind

        if self._append is None or self._clock is None:
            raise TypeError("this History cannot write; get one from store.history(scope)")
        return await rewind(
            self,
            at,
            append=self._append,
            now=self._clock,
            try_number=try_number,
            actor=actor,
            expected_version=expected_version,
            dry_run=dry_run,
        )

    async def _id(self) -> int | None:
        if self._scope_id is None:
            row = await self._reads.select_scope(scope_key(self.scope))
            if row is not None:
                self._scope_id = row.scope_id
        return self._scope_id

    async def _last(self, scope_id: int, where: EventFilter) -> EventRow | None:
        rows = await self._reads.select_events(
            scope_id,
            msgspec.structs.replace(where, descending=True, limit=1),
        )
        return rows[0] if rows else None

    async def _resolve_empty(self, at: At) -> Position:
        match at.kind:
            case "end_of_try" | "start_of_try":
                raise NoSuchPointError(self.scope, str(at), "nothing was ever written to it")
            case "version" if at.number > 0:
                raise NoSuchPointError(self.scope, str(at), "the scope is at version 0")
        return Position(seq=0, version=0, recorded_at=None, expiry_at=at.moment)

    async def _no_try(self, scope_id: int, at: At) -> NoSuchPointError:
        tries = [t.try_number for t in await self.tries()]
        if tries:
            detail = f"try {at.number} never wrote to it; tries that wrote: {tries}"
        else:
            detail = f"try {at.number} never wrote to it; no write of it carries a try number"
        return NoSuchPointError(self.scope, str(at), detail)

    async def _horizon(self, scope_id: int) -> _Horizon:
        """What compaction removed from the scope, from every marker it left (markers whose
        events the archive holds left nothing out)."""
        horizon = _Horizon()
        # Newest first, one index seek each (a scope has one marker per compaction that removed
        # something from it); the usual case, never compacted, is one seek.
        rows: list[EventRow] = []
        through: int | None = None
        while True:
            row = await self._reads.select_last_scope_event(
                scope_id, "compacted", through_seq=through
            )
            if row is None:
                break
            rows.append(row)
            through = row.seq - 1
        if not rows:
            return horizon
        archived = frozenset[str]() if self._archived is None else await self._archived.runs()
        for row in rows:
            event = decode_event(row.payload)
            assert isinstance(event, Compacted)
            if event.archive is not None and event.archive in archived:
                continue  # the archive holds every event it removed
            horizon.add(event)
        return horizon

    async def _point(self, scope_id: int, at: At, horizon: _Horizon) -> _Point:
        """Where `at` lands, as far as the kept events and the markers tell: a range of
        positions and of expiry times (one each when it is known exactly)."""
        match at.kind:
            case "time":
                assert at.moment is not None
                t = to_micros(at.moment)
                row = await self._last(scope_id, EventFilter(until=t))
                return _Point(at, 0 if row is None else row.seq, t, t, by_time=t)
            case "seq":
                p = at.number
                row, _ = await self._last_through(scope_id, p)
                low, high = await self._expiry_range(scope_id, row, p)
                return _Point(at, p, low, high)
            case "version":
                row = await self._through_version(scope_id, at)
                if at.number == 0:
                    return _Point(at, 0, 0, 0)
                if row is not None and row.version == at.number:
                    return _Point(at, row.seq, row.recorded_at, row.recorded_at)
                # The event of that version was removed: it lies before the next kept one.
                seq, t = (0, 0) if row is None else (row.seq, row.recorded_at)
                after = await self._reads.select_events(
                    scope_id, EventFilter(after_seq=seq, limit=1)
                )
                if not after:
                    return _Point(at, seq, t, t)
                return _Point(at, after[0].seq - 1, t, after[0].recorded_at, low=seq + 1)
            case "end_of_try":
                row = await self._last(scope_id, EventFilter(try_number=at.number))
                gone = horizon.tries.get(at.number)
                if gone is not None and (row is None or gone.last_seq > row.seq):
                    t = to_micros(gone.last_at)
                    return _Point(at, gone.last_seq, t, t)
                if row is None:
                    if at.number in horizon.old_tries:
                        raise HistoryCompactedError(self.scope, f"state({at})", horizon.old_from)
                    raise await self._no_try(scope_id, at)
                return _Point(at, row.seq, row.recorded_at, row.recorded_at)
            case "start_of_try":
                if at.number in horizon.old_tries:
                    raise HistoryCompactedError(self.scope, f"state({at})", horizon.old_from)
                first = await self._reads.select_events(
                    scope_id, EventFilter(try_number=at.number, limit=1)
                )
                found = [(r.seq, r.recorded_at) for r in first]
                gone = horizon.tries.get(at.number)
                if gone is not None and gone.first_at is not None:
                    found.append((gone.first_seq, to_micros(gone.first_at)))
                if not found:
                    raise await self._no_try(scope_id, at)
                seq, t = min(found)
                return _Point(at, seq - 1, t, t)
        raise AssertionError(at.kind)

    async def _expiry_range(
        self, scope_id: int, row: EventRow | None, through: int
    ) -> tuple[int, int]:
        """The times a state at `through` may apply expiry as of: that of the scope's last
        event at or before it, which may be a removed one after `row`, the last kept one."""
        low = 0 if row is None else row.recorded_at
        if row is not None and row.seq == through:
            return low, low
        after = await self._reads.select_events(
            scope_id, EventFilter(after_seq=0 if row is None else row.seq, limit=1)
        )
        # Versions have no gaps: when the next kept event follows at once, nothing was removed.
        if not after or after[0].version == (0 if row is None else row.version) + 1:
            return low, low
        return low, after[0].recorded_at

    async def _blocked(
        self, scope_id: int, point: _Point, rows: _Rows, horizon: _Horizon
    ) -> int | None:
        """None when the state at `point` needs no removed event; else a position at or after
        which to look for the earliest answerable point."""
        if horizon.old_from > 1 and point.through < horizon.old_from:
            return horizon.old_from
        needed: list[int] = []
        for span in horizon.shown:
            expired = None if span.expired_at is None else to_micros(span.expired_at)
            if point.by_time is not None:
                t = point.by_time
                shows = to_micros(span.from_at) <= t and (
                    span.until_at is None or to_micros(span.until_at) > t
                )
            else:
                shows = span.from_seq <= point.through and (
                    span.until_seq == 0 or span.until_seq > point.first
                )
            if shows and (expired is None or point.expiry_low < expired):
                needed.append(await self._shown_until(scope_id, span))
        low, high = point.expiry_low, point.expiry_high
        if low < high:
            # Where the point lands among removed events, and so the expiry time, is unsure.
            for row in rows.latest:
                expires = row.expires_at
                if row.kind == "set" and expires is not None and low < expires <= high:
                    needed.append(point.through + 1)
                    break
        return max(needed) if needed else None

    async def _shown_until(self, scope_id: int, span: Shown) -> int:
        if span.until_seq:
            return span.until_seq
        assert span.expired_at is not None, "a removed value nothing superseded had expired"
        after = await self._reads.select_events(
            scope_id, EventFilter(since=to_micros(span.expired_at), limit=1)
        )
        return after[0].seq if after else span.from_seq + 1

    async def _earliest(self, scope_id: int, start: int, horizon: _Horizon) -> int:
        """The earliest kept position at or after `start` whose state is answerable."""
        candidate = start
        for _ in range(64):
            after = await self._reads.select_events(
                scope_id, EventFilter(after_seq=candidate - 1, limit=1)
            )
            if not after:
                return candidate
            candidate = after[0].seq
            point = await self._point(scope_id, At.seq(candidate), horizon)
            rows = await self._rows(scope_id, point.through)
            blocked = await self._blocked(scope_id, point, rows, horizon)
            if blocked is None:
                return candidate
            candidate = max(blocked, candidate + 1)
        return candidate

    async def answerable_from(self) -> int:
        """The earliest position from which every state of the scope is answered (0: none
        was removed that any state would show). Questions about earlier points may be
        answered too: only those needing a removed event are refused."""
        scope_id = await self._id()
        if scope_id is None:
            return 0
        horizon = await self._horizon(scope_id)
        if horizon.empty:
            return 0
        ends = [await self._shown_until(scope_id, span) for span in horizon.shown]
        start = max([horizon.old_from, *ends])
        if start <= 1:
            return 0
        return await self._earliest(scope_id, start, horizon)


def _answerable_from(event: Compacted) -> int:
    if event.answerable_from_seq:
        return event.answerable_from_seq
    return event.removed_through_seq + 1 if event.removed_through_seq else 0


def _masked(state: dict[str, Any], sensitive: set[str]) -> dict[str, Any]:
    return {k: MASKED if k in sensitive else v for k, v in state.items()}


def diff_states(old: dict[str, Any], new: dict[str, Any]) -> Diff:
    """The dictionary difference of two states."""
    return Diff(
        added={k: v for k, v in new.items() if k not in old},
        removed={k: v for k, v in old.items() if k not in new},
        changed={
            k: (old[k], new[k])
            for k in sorted(old.keys() & new.keys())
            if not _same(old[k], new[k])
        },
    )


def _same(a: Any, b: Any) -> bool:
    """JSON equality: 1, 1.0 and True are three different values."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


class _Reads(Protocol):
    """The reads history makes: the log's, or the log's and the archive's together."""

    async def select_scope(self, scope_key: str) -> ScopeRow | None: ...

    async def select_events(self, scope_id: int, where: EventFilter) -> list[EventRow]: ...

    async def select_last_scope_event(
        self, scope_id: int, kind: str, *, through_seq: int | None = None
    ) -> EventRow | None: ...

    async def select_latest_per_key(
        self, scope_id: int, *, after_seq: int, through_seq: int
    ) -> list[EventRow]: ...


class _Point(msgspec.Struct, frozen=True):
    """Where a point lands: positions `low`..`through` (the state is that of `through`, the
    kept events telling no more), expiry applied as of a time in `expiry_low`..`expiry_high`
    (microseconds), or, for At.time, positions by their recorded time up to `by_time`."""

    at: At
    through: int
    expiry_low: int
    expiry_high: int
    by_time: int | None = None
    low: int | None = None  # None: `through`

    @property
    def first(self) -> int:
        return self.through if self.low is None else self.low


class _Horizon:
    """What compaction removed from one scope, gathered from its markers."""

    def __init__(self) -> None:
        self.old_from = 0  # markers from before the per-key horizon: every key before this
        self.old_tries: set[int] = set()
        self.keys: dict[str, int] = {}  # key: its highest removed position
        self.shown: list[Shown] = []
        self.tries: dict[int, TryHorizon] = {}
        self.empty = True

    def add(self, marker: Compacted) -> None:
        self.empty = False
        if not marker.per_key:
            self.old_from = max(self.old_from, _answerable_from(marker))
            self.old_tries.update(marker.first_writes_removed)
            return
        for key, through in marker.keys.items():
            self.keys[key] = max(self.keys.get(key, 0), through)
        self.shown.extend(marker.shown)
        for gone in marker.tries:
            known = self.tries.get(gone.try_number)
            if known is not None:
                first = min(
                    [(g.first_seq, g.first_at) for g in (known, gone) if g.first_at is not None],
                    default=(0, None),
                )
                last = max((known.last_seq, known.last_at), (gone.last_seq, gone.last_at))
                gone = TryHorizon(
                    try_number=gone.try_number,
                    last_seq=last[0],
                    last_at=last[1],
                    first_seq=first[0],
                    first_at=first[1],
                )
            self.tries[gone.try_number] = gone

    def through(self, key: str) -> int:
        """The highest removed position of the key's events (0: none went)."""
        old = self.old_from - 1 if self.old_from > 1 else 0
        return max(self.keys.get(key, 0), old)


class _Rows(NamedTuple):
    clear: EventRow | None  # the last clear at or before the position
    latest: list[EventRow]  # each key's latest event after it


class _TryCounter:
    __slots__ = ("first", "keys", "last", "writes")

    def __init__(self, row: EventRow) -> None:
        self.first = row
        self.last = row
        self.writes = 0
        self.keys: set[str] = set()

    def add(self, row: EventRow) -> None:
        self.last = row
        self.writes += 1
        if row.key is not None:
            self.keys.add(row.key)

    def summary(self, try_number: int) -> TrySummary:
        return TrySummary(
            try_number=try_number,
            first_seq=self.first.seq,
            last_seq=self.last.seq,
            first_write_at=from_micros(self.first.recorded_at),
            last_write_at=from_micros(self.last.recorded_at),
            writes=self.writes,
            keys=sorted(self.keys),
        )


def _aware(name: str, moment: datetime) -> datetime:
    if not isinstance(moment, datetime) or moment.tzinfo is None:
        raise TypeError(f"{name} must be an aware datetime (e.g. in UTC), got {moment!r}")
    return moment
