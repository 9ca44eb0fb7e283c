"""The storage interface of the event log.

Backends move opaque bytes plus a few indexed columns; they never encode or decode values or
events. Every write happens inside one `WriteTransaction`, which the backend serialises against
every other writer (of this process and of others on the same database) and commits atomically.
The rows, the filters and the argument shapes are in `rows`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import anyio

from eventstore.log.backends import rows
from eventstore.log.backends.rows import Ids, Keys, KeysAt
from eventstore.log.errors import CompactionRunningError

__all__ = ["LogBackend", "WriteTransaction"]


class WriteTransaction(ABC):
    """The primitives the log composes into one atomic append (or one compaction step)."""

    @abstractmethod
    async def select_head_and_scopes(
        self, scope_keys: Collection[str] = (), *, task: rows.Task | None = None
    ) -> tuple[rows.LogHead, dict[str, rows.ScopeRow]]:
        """The log head, the scopes with these keys and every scope of `task` (its map
        indices, those inserted in this transaction too)."""

    @abstractmethod
    async def select_current_heads(
        self, pairs: rows.Pairs = (), *, scope_id: int | None = None, now: int = 0
    ) -> dict[tuple[int, str], bytes]:
        """The first two bytes (the flags) of these projection values, expired too; with
        `scope_id`, of every key of that scope unexpired at `now`."""

    @abstractmethod
    async def select_idempotent(self, pairs: rows.Pairs) -> dict[tuple[int, str], bytes]:
        """Earlier appends' results by (scope_id, idempotency id), in one statement."""

    @abstractmethod
    async def insert(self, batch: rows.Insert) -> list[int]:
        """Write `batch` (see `Insert`); returns the ids of the new scopes, in order."""

    @abstractmethod
    async def delete_current(
        self, keys: Keys = (), *, keys_at: KeysAt = (), scope_ids: Ids = (), every: bool = False
    ) -> None:
        """Remove projection rows: by (scope_id, key), by (scope_id, key, seq) only while the
        row still comes from that seq, every row of these scopes, or (`every`) all."""

    @abstractmethod
    async def delete_events(self, seqs: Sequence[int]) -> int:
        """Remove the events at these positions; returns how many were there."""

    @abstractmethod
    async def delete_idempotent(self, *, recorded_before: int, limit: int) -> int:
        """Forget up to `limit` results recorded before this time; returns how many went."""

    @abstractmethod
    async def update_stored(
        self, *, payloads: rows.Payloads = (), values: rows.Values = ()
    ) -> None:
        """A new stored form, same meaning: payloads by (seq, payload), projection values by
        (value, scope_id, key, seq) where the row is still that seq's; what is gone is skipped."""


class LogBackend(ABC):
    """One database holding the event log, the projection and the scope heads."""

    _compaction_held: anyio.Lock | None = None
    read_only: bool = False  # opened without writing: no write lock to take

    @abstractmethod
    def write(self) -> AbstractAsyncContextManager[WriteTransaction]:
        """A write transaction: exclusive among writers, committed when the block exits cleanly."""

    @abstractmethod
    async def select_head(self) -> rows.LogHead:
        """The log head, read without a lock: every position up to it is committed."""

    @abstractmethod
    async def select_scopes(self, where: rows.ScopeFilter | None = None) -> list[rows.ScopeRow]:
        """The scopes `where` keeps, newest first (updated_at, scope_id descending); None: all
        of them, by scope_id."""

    @abstractmethod
    async def select_current(
        self, scope_id: int | None = None, where: rows.CurrentFilter = rows.EVERY_ROW
    ) -> list[rows.CurrentRow]:
        """The scope's projection rows `where` keeps, by key; every scope's (None) in any order."""

    async def select_value(self, scope_id: int, key: str, now: int) -> bytes | None:
        """The stored value of one key, if its row is unexpired at `now`: a get's point read,
        `select_current` for one key unless a backend has a leaner statement for it."""
        found = await self.select_current(scope_id, rows.CurrentFilter(key=key, now=now))
        return found[0].value if found else None

    @abstractmethod
    async def select_events(
        self, scope_id: int, where: rows.EventFilter
    ) -> list[rows.EventRow]: ...

    @abstractmethod
    async def select_markers(
        self, scope_ids: Collection[int], kinds: Collection[str], *, through_seq: int | None = None
    ) -> dict[tuple[int, str], rows.EventRow]:
        """Each scope's latest key-less event of each kind ("clear", "compacted", "erased") at
        or before `through_seq`, by (scope_id, kind): one index seek each, one statement."""

    @abstractmethod
    async def select_latest_per_key(
        self, scope_id: int, *, after_seq: int, through_seq: int
    ) -> list[rows.EventRow]:
        """Each key's latest event with after_seq < seq <= through_seq, in any order: one index
        seek per key, so a point-in-time state is read without replaying the scope."""

    @abstractmethod
    def select_all_events(
        self, *, after_seq: int = 0, batch: int = 1000
    ) -> AsyncIterator[rows.EventRow]:
        """Every event of the log after a position, in position order, streamed in batches."""

    @abstractmethod
    async def select_storage(self, *, idempotent_before: int | None = None) -> rows.Storage:
        """The bytes the log takes (an estimate in memory) and, if asked, how many idempotency
        results were recorded before that time."""

    async def reclaim_space(self, max_pages: int) -> int:
        """Give up to `max_pages` free pages back in one short write transaction; returns the
        free pages left (0: done, or nothing to do on this backend, the default)."""
        return 0

    async def checkpoint(self) -> None:  # noqa: B027 (nothing to do is the default)
        """Fold the write-ahead log back into the database (SQLite); by default nothing."""

    @abstractmethod
    async def aclose(self) -> None:
        """Close every connection; calling it again does nothing."""

    async def select_scope(self, scope_key: str) -> rows.ScopeRow | None:
        """The scope with this key, or None: `select_scopes` for one key."""
        found = await self.select_scopes(rows.ScopeFilter(scope_key=scope_key))
        return found[0] if found else None

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[None]:
        """Hold the log and the projection still while the caller reads both (verify): under
        the write lock; read-only, what `read_only_snapshot` holds."""
        if self.read_only:
            async with self.read_only_snapshot():
                yield
            return
        async with self.write():
            yield

    @asynccontextmanager
    async def read_only_snapshot(self) -> AsyncIterator[None]:
        """What a read-only backend holds for `snapshot`; by default nothing (a writer elsewhere
        may then commit between two reads of verify: run it again, or on a writable store)."""
        yield

    @asynccontextmanager
    async def compaction_lock(self) -> AsyncIterator[None]:
        """Held for a whole compaction; never waits: raises `CompactionRunningError` when held.
        This default knows this object only; a backend other processes open overrides it."""
        if self._compaction_held is None:
            self._compaction_held = anyio.Lock()
        if self._compaction_held.locked():
            raise CompactionRunningError("this log")
        async with self._compaction_held:
            yield
