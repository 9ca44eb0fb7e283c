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
Compaction appends a `Compacted` marker to every scope it removed events from. Its
`answerable_from_seq` (A) promises:

1. every event of the scope with seq >= A is kept, and the event at A itself is an event of the
   scope that is kept;
2. every state at a position >= A is what it was: each key's latest event at or before the
   position (after the last clear) is kept, or was one that would not show in that state
   anyway (a value expired as of the state's expiry time, a delete or clear with nothing left
   to hide);
3. no removed event was recorded at the same time as the event at A (A starts a commit), so a
   time at or after the event at A's time sees only kept events;
4. the first write of a try with writes at or after A is kept; a try whose first write was
   removed is listed in `first_writes_removed` (it may still be running and write after A), and
   its start, or its end once none of its writes is left, raise `HistoryCompactedError`.

A marker without `answerable_from_seq` (0) falls back to `removed_through_seq + 1`. The latest
marker of the scope decides. History then answers a question only if it reaches no position
before A, and raises `HistoryCompactedError` naming A otherwise:

- `state(at)` and both sides of `diff`: the resolved position must be >= A;
- `events(...)`: the lower bound (`after_seq + 1`, or the first event recorded at or after
  `since`) must be >= A, i.e. after_seq >= A - 1 or since >= the time of the event at A;
- `timeline(key, after_seq=...)`: after_seq >= A - 1.

`tries()` summarises the events the log still holds.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec

from eventstore.backends.base import EventFilter, EventRow, LogBackend
from eventstore.crypto import ERASED, MASKED, Vault
from eventstore.errors import HistoryCompactedError, NoSuchPointError
from eventstore.events import (
    EVENT_KINDS,
    Compacted,
    KeySet,
    RecordedEvent,
    decode_event,
    from_micros,
    to_micros,
)
from eventstore.log import AppendRequest, AppendResult, recorded_event
from eventstore.scopes import Scope, scope_key
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
        *,
        append: Callable[[AppendRequest], Awaitable[AppendResult]] | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.backend = backend
        self.scope = scope
        self.vault = vault or Vault()
        self._append = append  # the store's write path, for rewind
        self._clock = clock
        self._scope_key = scope_key(scope)
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
        await self._check_lower_bound(scope_id, "events", after_seq, since_us)
        rows = await self.backend.select_events(
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
        marker = await self.backend.select_last_scope_event(scope_id, "erased")
        return 0 if marker is None else marker.seq

    async def timeline(
        self, key: str, *, after_seq: int | None = None, mask: bool = False
    ) -> list[RecordedEvent]:
        """Every event of one key, oldest first (sets and deletes; clears are in `events`)."""
        scope_id = await self._id()
        if scope_id is None:
            return []
        await self._check_lower_bound(scope_id, f"timeline({key!r})", after_seq, None)
        rows = await self.backend.select_events(scope_id, EventFilter(key=key, after_seq=after_seq))
        return await self._recorded(scope_id, rows, mask)

    async def resolve(self, at: At) -> Position:
        """Where `at` lands in this scope; raises NoSuchPointError for a point that never was."""
        scope_id = await self._id()
        if scope_id is None:
            return await self._resolve_empty(at)
        position, _ = await self._locate(scope_id, at)
        return position

    async def _locate(self, scope_id: int, at: At) -> tuple[Position, _Rows | None]:
        """The position of `at`, and for At.seq the rows of the state there, found on the way."""
        row: EventRow | None
        expiry: int | None = None
        rows: _Rows | None = None
        match at.kind:
            case "seq":
                row, rows = await self._last_through(scope_id, at.number)
            case "version":
                row = await self._last(scope_id, EventFilter(through_version=at.number))
                head = await self._last(scope_id, EventFilter())
                if head is not None and at.number > head.version:
                    raise NoSuchPointError(
                        self.scope, str(at), f"the scope is at version {head.version}"
                    )
            case "time":
                assert at.moment is not None
                expiry = to_micros(at.moment)
                row = await self._last(scope_id, EventFilter(until=expiry))
            case "end_of_try":
                row = await self._last(scope_id, EventFilter(try_number=at.number))
                if row is None:
                    await self._check_try_start(scope_id, at)
                    raise await self._no_try(scope_id, at)
            case "start_of_try":
                # Compaction lists the tries whose first write it removed: where they started
                # cannot be found any more, even if they wrote again after.
                await self._check_try_start(scope_id, at)
                first = await self.backend.select_events(
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
        marker = await self.backend.select_last_scope_event(scope_id, "compacted", through_seq=seq)
        candidates = [r for r in (rows.clear, marker) if r is not None] + rows.latest
        return max(candidates, key=lambda r: r.seq, default=None), rows

    async def _rows(self, scope_id: int, through_seq: int) -> _Rows:
        clear = await self.backend.select_last_scope_event(
            scope_id, "clear", through_seq=through_seq
        )
        latest = await self.backend.select_latest_per_key(
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
        position, rows = await self._locate(scope_id, at)
        await self._check_position(scope_id, f"state({at})", position)
        if position.seq == 0:
            return {}, sensitive
        if rows is None:
            rows = await self._rows(scope_id, position.seq)
        now = None if position.expiry_at is None else to_micros(position.expiry_at)
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
            rows = await self.backend.select_events(
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

    async def answerable_from(self) -> int:
        """The earliest position every question can reach back to (0: nothing was compacted)."""
        scope_id = await self._id()
        return 0 if scope_id is None else await self._answerable(scope_id)

    async def _id(self) -> int | None:
        if self._scope_id is None:
            row = await self.backend.select_scope(scope_key(self.scope))
            if row is not None:
                self._scope_id = row.scope_id
        return self._scope_id

    async def _last(self, scope_id: int, where: EventFilter) -> EventRow | None:
        rows = await self.backend.select_events(
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

    async def _marker(self, scope_id: int) -> Compacted | None:
        marker = await self.backend.select_last_scope_event(scope_id, "compacted")
        if marker is None:
            return None
        event = decode_event(marker.payload)
        assert isinstance(event, Compacted)
        return event

    async def _check_try_start(self, scope_id: int, at: At) -> None:
        event = await self._marker(scope_id)
        if event is not None and at.number in event.first_writes_removed:
            raise HistoryCompactedError(self.scope, f"state({at})", _answerable_from(event))

    async def _answerable(self, scope_id: int) -> int:
        event = await self._marker(scope_id)
        return 0 if event is None else _answerable_from(event)

    async def _check_position(self, scope_id: int, question: str, at: Position) -> None:
        earliest = await self._answerable(scope_id)
        if earliest > 1 and at.seq < earliest:
            raise HistoryCompactedError(self.scope, question, earliest)

    async def _check_lower_bound(
        self, scope_id: int, question: str, after_seq: int | None, since: int | None
    ) -> None:
        earliest = await self._answerable(scope_id)
        if earliest <= 1:
            return
        if after_seq is not None and after_seq >= earliest - 1:
            return
        if since is not None:
            first = await self.backend.select_events(
                scope_id, EventFilter(after_seq=earliest - 1, limit=1)
            )
            if first and since >= first[0].recorded_at:
                return
        raise HistoryCompactedError(self.scope, question, earliest)


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
