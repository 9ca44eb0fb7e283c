"""History's reads over log + archive: one scope's events, as if compaction had removed none.

`ArchivedReads` answers the reads `History` makes (the events of a scope, the last clear or
marker, each key's latest event) from the log and from the scope's archived events together,
each position once (a crash between archiving and removing leaves an event in both).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import NamedTuple

import anyio.to_thread

from eventstore.log.archive import Archive
from eventstore.log.backends.base import LogBackend
from eventstore.log.backends.rows import EventFilter, EventRow, ScopeRow

__all__ = ["ArchivedReads"]


class ArchivedReads:
    """The reads of one scope's history from the log and the archive together."""

    def __init__(self, backend: LogBackend, archive: Archive, scope_key: str) -> None:
        self.backend = backend
        self.archive = archive
        self.scope_key = scope_key
        # What was read, with the archive's token then: read again once a run is written.
        self._read: _Read | None = None

    async def refresh(self, scope_id: int) -> None:
        """Bring what was read from the archive up to date; once per history question, in a
        worker thread (listing a directory, and reading a run's file, block)."""
        self._read = await anyio.to_thread.run_sync(self._load, scope_id, self._read)

    def _load(self, scope_id: int, read: _Read | None) -> _Read:
        token, manifests = self.archive.snapshot()
        if token is not None and read is not None and read.token == token:
            return read
        rows = [e.row(scope_id) for e in self.archive.scope_events(self.scope_key, manifests)]
        return _Read(token, rows, frozenset(m.run for m in manifests))

    async def _current(self, scope_id: int) -> _Read:
        if self._read is None:
            await self.refresh(scope_id)
        assert self._read is not None
        return self._read

    async def archived(self, scope_id: int) -> list[EventRow]:
        """The scope's archived events, by position."""
        return (await self._current(scope_id)).rows

    async def runs(self, scope_id: int) -> frozenset[str]:
        """The compaction runs whose events the archive holds."""
        return (await self._current(scope_id)).runs

    async def select_scope(self, scope_key: str) -> ScopeRow | None:
        return await self.backend.select_scope(scope_key)

    async def select_events(self, scope_id: int, where: EventFilter) -> list[EventRow]:
        kept = await self.backend.select_events(scope_id, where)
        extra = [r for r in await self.archived(scope_id) if where.matches(r)]
        if not extra:
            return kept
        merged = _merge(kept, extra)
        if where.descending:
            merged.reverse()
        return merged if where.limit is None else merged[: where.limit]

    async def select_markers(
        self, scope_ids: Collection[int], kinds: Collection[str], *, through_seq: int | None = None
    ) -> dict[tuple[int, str], EventRow]:
        found = await self.backend.select_markers(scope_ids, kinds, through_seq=through_seq)
        for scope_id in scope_ids:
            for r in await self.archived(scope_id):
                if (
                    r.key is None
                    and r.kind in kinds
                    and (through_seq is None or r.seq <= through_seq)
                ):
                    kept = found.get((scope_id, r.kind))
                    if kept is None or kept.seq < r.seq:
                        found[(scope_id, r.kind)] = r
        return found

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


class _Read(NamedTuple):
    token: object
    rows: list[EventRow]
    runs: frozenset[str]


def _merge(kept: Iterable[EventRow], extra: Iterable[EventRow]) -> list[EventRow]:
    by_seq = {r.seq: r for r in extra}
    by_seq.update((r.seq, r) for r in kept)
    return [by_seq[s] for s in sorted(by_seq)]
