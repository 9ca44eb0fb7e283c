"""What compaction removed from one scope, and which questions that leaves unanswerable.

The contract is in `projections.history`; the markers' fields in `projections.compaction`.
"""

from __future__ import annotations

import msgspec

from eventstore.log.backends.rows import EventFilter, EventRow
from eventstore.log.errors import HistoryCompactedError
from eventstore.log.events import Compacted, Shown, TryHorizon, decode_event, to_micros
from projections.compaction.horizons import answerable_from
from projections.points import At
from projections.scope_reads import Rows, ScopeReader

__all__ = ["Horizon", "HorizonReader", "Point"]


class HorizonReader(ScopeReader):
    """The reads that take the scope's compacted past into account."""

    async def _horizon(self, scope_id: int) -> Horizon:
        """What compaction removed from the scope, from every marker it left (markers whose
        events the archive holds left nothing out)."""
        horizon = Horizon()
        # Newest first, one index seek each (a scope has one marker per compaction that removed
        # something from it); the usual case, never compacted, is one seek.
        rows: list[EventRow] = []
        through: int | None = None
        while True:
            row = await self._marker(scope_id, "compacted", through)
            if row is None:
                break
            rows.append(row)
            through = row.seq - 1
        if not rows:
            return horizon
        archived = frozenset[str]()
        if self._archived is not None:
            archived = await self._archived.runs(scope_id)
        for row in rows:
            event = decode_event(row.payload)
            assert isinstance(event, Compacted)
            if event.archive is not None and event.archive in archived:
                continue  # the archive holds every event it removed
            horizon.add(event)
        return horizon

    async def _point(self, scope_id: int, at: At, horizon: Horizon) -> Point:
        """Where `at` lands, as far as the kept events and the markers tell: a range of
        positions and of expiry times (one each when it is known exactly)."""
        match at.kind:
            case "time":
                assert at.moment is not None
                t = to_micros(at.moment)
                row = await self._last(scope_id, EventFilter(until=t))
                return Point(at, 0 if row is None else row.seq, t, t, by_time=t)
            case "seq":
                p = at.number
                row, rows = await self._last_through(scope_id, p)
                low, high = await self._expiry_range(scope_id, row, p)
                return Point(at, p, low, high, rows=rows)
            case "version":
                row = await self._through_version(scope_id, at)
                if at.number == 0:
                    return Point(at, 0, 0, 0)
                if row is not None and row.version == at.number:
                    return Point(at, row.seq, row.recorded_at, row.recorded_at)
                # The event of that version was removed: it lies before the next kept one.
                seq, t = (0, 0) if row is None else (row.seq, row.recorded_at)
                after = await self._reads.select_events(
                    scope_id, EventFilter(after_seq=seq, limit=1)
                )
                if not after:
                    return Point(at, seq, t, t)
                return Point(at, after[0].seq - 1, t, after[0].recorded_at, low=seq + 1)
            case "end_of_try":
                row = await self._last(scope_id, EventFilter(try_number=at.number))
                gone = horizon.tries.get(at.number)
                if gone is not None and (row is None or gone.last_seq > row.seq):
                    t = to_micros(gone.last_at)
                    return Point(at, gone.last_seq, t, t)
                if row is None:
                    if at.number in horizon.old_tries:
                        raise HistoryCompactedError(self.scope, f"state({at})", horizon.old_from)
                    raise await self._no_try(scope_id, at)
                return Point(at, row.seq, row.recorded_at, row.recorded_at)
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
                return Point(at, seq - 1, t, t)
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
        self, scope_id: int, point: Point, rows: Rows, horizon: Horizon
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

    async def _rows_at(self, scope_id: int, point: Point) -> Rows:
        """The rows of the state at `point`."""
        if point.rows is not None:
            return point.rows
        return await self._rows(scope_id, point.through)

    async def _shown_until(self, scope_id: int, span: Shown) -> int:
        if span.until_seq:
            return span.until_seq
        assert span.expired_at is not None, "a removed value nothing superseded had expired"
        after = await self._reads.select_events(
            scope_id, EventFilter(since=to_micros(span.expired_at), limit=1)
        )
        return after[0].seq if after else span.from_seq + 1

    async def _earliest(self, scope_id: int, start: int, horizon: Horizon) -> int:
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
            rows = await self._rows_at(scope_id, point)
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


class Point(msgspec.Struct, frozen=True):
    """Where a point lands: positions `low`..`through` (the state is that of `through`, the
    kept events telling no more), expiry applied as of a time in `expiry_low`..`expiry_high`
    (microseconds), or, for At.time, positions by their recorded time up to `by_time`."""

    at: At
    through: int
    expiry_low: int
    expiry_high: int
    by_time: int | None = None
    low: int | None = None  # None: `through`
    rows: Rows | None = None  # the rows of the state at `through`, when read on the way

    @property
    def first(self) -> int:
        return self.through if self.low is None else self.low


class Horizon:
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
            self.old_from = max(self.old_from, answerable_from(marker))
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
