"""History's reads over log + archive: one scope's events, as if compaction had removed none.

`ArchivedReads` answers the reads `History` makes (the events of a scope, the last clear or
marker, each key's latest event) from the log and from the scope's archived events together,
each position once (a crash between archiving and removing leaves an event in both).
"""

from __future__ import annotations

from collections.abc import Iterable

from eventstore.log.archive import Archive
from eventstore.log.backends.base import EventFilter, EventRow, LogBackend, ScopeRow

__all__ = ["ArchivedReads"]


class ArchivedReads:
    """The reads of one scope's history from the log and the archive together."""

    def __init__(self, backend: LogBackend, archive: Archive, scope_key: str) -> None:
        self.backend = backend
        self.archive = archive
        self.scope_key = scope_key
        # What was read, and the archive's token then: read again once a run is written.
        self._rows: tuple[object, list[EventRow]] | None = None
        self._runs: tuple[object, frozenset[str]] | None = None

    async def archived(self, scope_id: int) -> list[EventRow]:
        """The scope's archived events, by position."""
        token = self.archive.token()
        if token is None or self._rows is None or self._rows[0] != token:
            events = await self.archive.ascope_events(self.scope_key)
            self._rows = (token, [e.row(scope_id) for e in events])
        return self._rows[1]

    async def runs(self) -> frozenset[str]:
        """The compaction runs whose events the archive holds."""
        token = self.archive.token()
        if token is None or self._runs is None or self._runs[0] != token:
            runs = frozenset(m.run for m in await self.archive.amanifests())
            self._runs = (token, runs)
        return self._runs[1]

    async def select_scope(self, scope_key: str) -> ScopeRow | None:
        return await self.backend.select_scope(scope_key)

    async def select_events(self, scope_id: int, where: EventFilter) -> list[EventRow]:
        kept = await self.backend.select_events(scope_id, where)
        extra = [r for r in await self.archived(scope_id) if _matches(r, where)]
        if not extra:
            return kept
        merged = _merge(kept, extra)
        if where.descending:
            merged.reverse()
        return merged if where.limit is None else merged[: where.limit]

    async def select_last_scope_event(
        self, scope_id: int, kind: str, *, through_seq: int | None = None
    ) -> EventRow | None:
        kept = await self.backend.select_last_scope_event(scope_id, kind, through_seq=through_seq)
        found = [
            r
            for r in await self.archived(scope_id)
            if r.key is None and r.kind == kind and (through_seq is None or r.seq <= through_seq)
        ]
        if kept is not None:
            found.append(kept)
        return max(found, key=lambda r: r.seq, default=None)

    async def select_latest_per_key(
        self, scope_id: int, *, after_seq: int, through_seq: int
    ) -> list[EventRow]:
        latest = {
            r.key: r
            for r in await self.backend.select_latest_per_key(
                scope_id, after_seq=after_seq, through_seq=through_seq
            )
        }
        for r in await self.archived(scope_id):
            if r.key is not None and after_seq < r.seq <= through_seq:
                known = latest.get(r.key)
                if known is None or known.seq < r.seq:
                    latest[r.key] = r
        return list(latest.values())


def _merge(kept: Iterable[EventRow], extra: Iterable[EventRow]) -> list[EventRow]:
    by_seq = {r.seq: r for r in extra}
    by_seq.update((r.seq, r) for r in kept)
    return [by_seq[s] for s in sorted(by_seq)]


def _matches(row: EventRow, where: EventFilter) -> bool:
    return (
        (where.key is None or row.key == where.key)
        and (where.kinds is None or row.kind in where.kinds)
        and (where.try_number is None or row.try_number == where.try_number)
        and (where.since is None or row.recorded_at >= where.since)
        and (where.until is None or row.recorded_at <= where.until)
        and (where.after_seq is None or row.seq > where.after_seq)
        and (where.through_seq is None or row.seq <= where.through_seq)
        and (where.through_version is None or row.version <= where.through_version)
    )
