"""The storage interface of the event log.

Backends move opaque bytes plus a few indexed columns; they never encode or decode values or
events. Every write happens inside one `WriteTransaction`, which the backend serialises against
every other writer (of this process and of others on the same database) and commits atomically.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import anyio

from eventstore.log.backends.rows import (
    EVERY_ROW,
    CurrentFilter,
    CurrentRow,
    EventFilter,
    EventRow,
    IdempotentRow,
    Ids,
    Keys,
    KeysAt,
    LogHead,
    Payloads,
    ScopeFilter,
    ScopeRow,
    Task,
    Values,
)
from eventstore.log.errors import CompactionRunningError

__all__ = ["LogBackend", "WriteTransaction"]


class WriteTransaction(ABC):
    """The primitives the log composes into one atomic append of a batch.

    Compaction removes events in small batches, each in a write transaction of its own, so
    appends keep being served between them. Positions and versions of events never change.
    """

    @abstractmethod
    async def select_head(self) -> LogHead: ...

    @abstractmethod
    async def select_scopes(
        self, scope_keys: Collection[str] = (), *, task: Task | None = None
    ) -> dict[str, ScopeRow]:
        """The scopes with these keys, and every scope of `task` (all map indices, those
        inserted in this transaction too)."""

    async def select_head_and_scopes(
        self, scope_keys: Collection[str]
    ) -> tuple[LogHead, dict[str, ScopeRow]]:
        """The head and these scopes, as the batch starts; a backend may read both at once."""
        return await self.select_head(), await self.select_scopes(scope_keys)

    @abstractmethod
    async def select_live_keys(self, scope_id: int, now: int) -> set[str]:
        """The keys of the scope with an unexpired row in the projection."""

    @abstractmethod
    async def select_current_heads(self, scope_id: int, keys: Collection[str]) -> dict[str, bytes]:
        """The first two bytes (the flags) of each of these keys' projection value, expired too."""

    async def select_current_heads_of(
        self, pairs: Collection[tuple[int, str]]
    ) -> dict[tuple[int, str], bytes]:
        """`select_current_heads` for (scope_id, key) pairs of many scopes, maybe at once."""
        by_scope: dict[int, list[str]] = {}
        for scope_id, key in pairs:
            by_scope.setdefault(scope_id, []).append(key)
        found: dict[tuple[int, str], bytes] = {}
        for scope_id, keys in by_scope.items():
            heads = await self.select_current_heads(scope_id, keys)
            found.update(((scope_id, key), head) for key, head in heads.items())
        return found

    @abstractmethod
    async def select_idempotent(
        self, keys: Collection[tuple[int, str]]
    ) -> dict[tuple[int, str], bytes]:
        """Earlier appends' results by (scope_id, idempotency id): one statement per batch."""

    @abstractmethod
    async def insert_scope(self, row: ScopeRow) -> int:
        """Insert a new scope and return its id."""

    @abstractmethod
    async def insert_events(self, rows: Sequence[EventRow]) -> None: ...

    @abstractmethod
    async def insert_idempotent(self, rows: Sequence[IdempotentRow]) -> None: ...

    @abstractmethod
    async def upsert_current(self, rows: Sequence[CurrentRow]) -> None: ...

    @abstractmethod
    async def update_scopes(self, rows: Sequence[ScopeRow]) -> None: ...

    @abstractmethod
    async def update_head(self, head: LogHead) -> None: ...

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
    async def update_stored(self, *, payloads: Payloads = (), values: Values = ()) -> None:
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
    async def select_scopes(self, where: ScopeFilter | None = None) -> list[ScopeRow]:
        """The scopes `where` keeps, newest first (updated_at, scope_id descending); None: all
        of them, by scope_id."""

    async def select_scope(self, scope_key: str) -> ScopeRow | None:
        """The scope with this key, or None: `select_scopes` for one key."""
        found = await self.select_scopes(ScopeFilter(scope_key=scope_key))
        return found[0] if found else None

    @abstractmethod
    async def select_current(
        self, scope_id: int | None = None, where: CurrentFilter = EVERY_ROW
    ) -> list[CurrentRow]:
        """The scope's projection rows `where` keeps, by key; every scope's (None) in any order."""

    async def select_value(self, scope_id: int, key: str, now: int) -> bytes | None:
        """The stored value of one key, if its row is unexpired at `now`: a get's point read,
        `select_current` for one key unless a backend has a leaner statement for it."""
        rows = await self.select_current(scope_id, CurrentFilter(key=key, now=now))
        return rows[0].value if rows else None

    @abstractmethod
    async def select_events(self, scope_id: int, where: EventFilter) -> list[EventRow]: ...

    @abstractmethod
    async def select_last_scope_event(
        self, scope_id: int, kind: str, *, through_seq: int | None = None
    ) -> EventRow | None:
        """The scope's latest key-less event of `kind` ("clear", "compacted") at or before
        `through_seq`: one index seek on (scope_id, key, seq) with key NULL."""

    @abstractmethod
    async def select_latest_per_key(
        self, scope_id: int, *, after_seq: int, through_seq: int
    ) -> list[EventRow]:
        """Each key's latest event with after_seq < seq <= through_seq, in any order: one index
        seek per key, so a point-in-time state is read without replaying the scope."""

    @abstractmethod
    def select_all_events(
        self, *, after_seq: int = 0, batch: int = 1000
    ) -> AsyncIterator[EventRow]:
        """Every event of the log after a position, in position order, streamed in batches."""

    @abstractmethod
    async def select_last_seq(self) -> int:
        """The log head's last position, read without a lock: every position up to it committed."""

    @abstractmethod
    async def select_erased_through(self, scope_ids: Collection[int]) -> dict[int, int]:
        """The position of each of these scopes' last `erased` marker, in one statement."""

    @abstractmethod
    async def count_idempotent(self, *, recorded_before: int) -> int:
        """How many idempotency results were recorded before this time."""

    @abstractmethod
    async def select_storage_bytes(self) -> int:
        """The bytes the log takes where it is stored (an estimate of the rows in memory)."""

    async def reclaim_space(self, max_pages: int) -> int:
        """Give up to `max_pages` free pages back in one short write transaction; returns the
        free pages left (0: done, or nothing to do on this backend, the default)."""
        return 0

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
        """What a read-only backend holds for `snapshot`; by default nothing.

        Without it, a writer elsewhere (a replica's primary) can commit between two reads and
        make verify report a mismatch that is not there: run it again, or verify on a writable
        store.
        """
        yield

    async def checkpoint(self) -> None:  # noqa: B027 (nothing to do is the default)
        """Fold the write-ahead log back into the database (SQLite); by default nothing."""

    @asynccontextmanager
    async def compaction_lock(self) -> AsyncIterator[None]:
        """Held for a whole compaction; never waits: raises `CompactionRunningError` when held.

        This default only knows this backend object; backends a second process or replica can
        open override it with a lock the database's other users see too.
        """
        if self._compaction_held is None:
            self._compaction_held = anyio.Lock()
        lock = self._compaction_held
        if lock.locked():
            raise CompactionRunningError("this log")
        async with lock:
            yield

    @abstractmethod
    async def aclose(self) -> None:
        """Close every connection; calling it again does nothing."""
