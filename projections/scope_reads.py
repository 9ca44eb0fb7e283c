"""The reads history makes of one scope: its id, its last events, the rows of a state, where
a point lands when nothing was compacted away, and its tries.

Reads go to the log, or, with an archive, to the log and the archive together
(`projections.archived`), which is brought up to date once per history question.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from datetime import datetime
from typing import NamedTuple, Protocol

import msgspec

from eventstore.log.archive import Archive
from eventstore.log.backends.base import LogBackend
from eventstore.log.backends.rows import EventFilter, EventRow, ScopeRow
from eventstore.log.errors import NoSuchPointError
from eventstore.log.events import from_micros, to_micros
from eventstore.log.requests import AppendRequest, AppendResult
from eventstore.log.scopes import Scope, scope_key
from eventstore.log.vault import Vault
from projections.archived import ArchivedReads
from projections.points import At
from projections.tries import TryCounter, TrySummary

__all__ = ["Position", "Rows", "ScopeReader"]

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


class ScopeReader:
    """One scope's reads, shared by the parts of `History`."""

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
        self._append = append  # the store's write path and clock, for rewind
        self._clock = clock
        self._scope_key = scope_key(scope)
        # With an archive, every history read takes in the scope's archived events too.
        self._archived = (
            None if archive is None else ArchivedReads(backend, archive, self._scope_key)
        )
        self._reads: _Reads = backend if self._archived is None else self._archived
        self.scope = scope
        self.vault = vault or Vault()
        self._scope_id: int | None = None

    def write_path(
        self,
    ) -> tuple[Callable[[AppendRequest], Awaitable[AppendResult]], Callable[[], datetime]]:
        """The store's write path and clock, for rewind; a history made without them cannot
        write."""
        if self._append is None or self._clock is None:
            raise TypeError("this History cannot write; get one from store.history(scope)")
        return self._append, self._clock

    async def _id(self) -> int | None:
        """The scope's id (None: never written); every question starts here, so this is
        where the archive's part is brought up to date."""
        if self._scope_id is None:
            row = await self._reads.select_scope(scope_key(self.scope))
            if row is not None:
                self._scope_id = row.scope_id
        if self._scope_id is not None and self._archived is not None:
            await self._archived.refresh(self._scope_id)
        return self._scope_id

    async def _last(self, scope_id: int, where: EventFilter) -> EventRow | None:
        rows = await self._reads.select_events(
            scope_id,
            msgspec.structs.replace(where, descending=True, limit=1),
        )
        return rows[0] if rows else None

    async def _through_version(self, scope_id: int, at: At) -> EventRow | None:
        """The last event at or before version `at.number`; NoSuchPointError past the head."""
        row = await self._last(scope_id, EventFilter(through_version=at.number))
        head = await self._last(scope_id, EventFilter())
        if head is not None and at.number > head.version:
            raise NoSuchPointError(self.scope, str(at), f"the scope is at version {head.version}")
        return row

    async def _locate(self, scope_id: int, at: At) -> tuple[Position, Rows | None]:
        """The position of `at`, and for At.seq the rows of the state there, found on the way."""
        row: EventRow | None
        expiry: int | None = None
        rows: Rows | None = None
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

    async def _last_through(self, scope_id: int, seq: int) -> tuple[EventRow | None, Rows]:
        """The scope's last event at or before `seq`, and the rows of the state there.

        That event is the latest of: the last clear, the last marker, and each key's latest
        event after that clear. Those are index seeks, and the state needs them anyway.
        """
        markers = await self._reads.select_markers(
            [scope_id], ("clear", "compacted"), through_seq=seq
        )
        rows = await self._latest(scope_id, seq, markers.get((scope_id, "clear")))
        marker = markers.get((scope_id, "compacted"))
        candidates = [r for r in (rows.clear, marker) if r is not None] + rows.latest
        return max(candidates, key=lambda r: r.seq, default=None), rows

    async def _rows(self, scope_id: int, through_seq: int) -> Rows:
        clear = await self._marker(scope_id, "clear", through_seq)
        return await self._latest(scope_id, through_seq, clear)

    async def _marker(self, scope_id: int, kind: str, through_seq: int | None) -> EventRow | None:
        """The scope's last marker of this kind at or before `through_seq`."""
        found = await self._reads.select_markers([scope_id], [kind], through_seq=through_seq)
        return found.get((scope_id, kind))

    async def _latest(self, scope_id: int, through_seq: int, clear: EventRow | None) -> Rows:
        latest = await self._reads.select_latest_per_key(
            scope_id, after_seq=0 if clear is None else clear.seq, through_seq=through_seq
        )
        return Rows(clear, latest)

    async def tries(self) -> list[TrySummary]:
        """One summary per try that wrote to the scope, in try order."""
        scope_id = await self._id()
        if scope_id is None:
            return []
        found: dict[int, TryCounter] = {}
        after = 0
        while True:
            rows = await self._reads.select_events(
                scope_id, EventFilter(after_seq=after, limit=_PAGE)
            )
            for row in rows:
                if row.try_number is not None:
                    counter = found.get(row.try_number)
                    if counter is None:
                        counter = found[row.try_number] = TryCounter(row)
                    counter.add(row)
            if len(rows) < _PAGE:
                break
            after = rows[-1].seq
        return [found[n].summary(n) for n in sorted(found)]

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

    async def _erased_through(self, scope_id: int) -> int:
        """The position of the scope's last erasure; every value before it reads as erased."""
        self.vault.refresh()  # an erasure by another process destroyed keys this one holds
        marker = await self._marker(scope_id, "erased", None)
        return 0 if marker is None else marker.seq


class Rows(NamedTuple):
    clear: EventRow | None  # the last clear at or before the position
    latest: list[EventRow]  # each key's latest event after it


class _Reads(Protocol):
    """The reads history makes: the log's, or the log's and the archive's together."""

    async def select_scope(self, scope_key: str) -> ScopeRow | None: ...

    async def select_events(self, scope_id: int, where: EventFilter) -> list[EventRow]: ...

    async def select_markers(
        self, scope_ids: Collection[int], kinds: Collection[str], *, through_seq: int | None = None
    ) -> dict[tuple[int, str], EventRow]: ...

    async def select_latest_per_key(
        self, scope_id: int, *, after_seq: int, through_seq: int
    ) -> list[EventRow]: ...
