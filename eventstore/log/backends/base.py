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
import msgspec

from eventstore.log.errors import CompactionRunningError

__all__ = [
    "CurrentRow",
    "EventFilter",
    "EventRow",
    "IdempotentRow",
    "LogBackend",
    "LogHead",
    "ScopeFilter",
    "ScopeRow",
    "WriteTransaction",
]


class EventRow(msgspec.Struct, array_like=True, gc=False):
    """One event as stored. Times are integer microseconds since the epoch, UTC."""

    seq: int
    scope_id: int
    version: int
    kind: str
    key: str | None
    expires_at: int | None
    recorded_at: int
    try_number: int | None
    actor: str
    payload: bytes


class CurrentRow(msgspec.Struct, array_like=True, gc=False):
    """One live key of the current-values projection."""

    scope_id: int
    key: str
    value: bytes
    expires_at: int | None
    version: int
    seq: int
    updated_at: int


class IdempotentRow(msgspec.Struct, array_like=True, gc=False):
    """The result of an append made with an idempotency id, kept so a retry gets it back."""

    scope_id: int
    idempotency_id: str
    result: bytes
    recorded_at: int


class ScopeRow(msgspec.Struct, gc=False):
    """A scope the log has seen, with its head: the last version and the newest try that wrote."""

    scope_id: int
    scope_key: str
    version: int = 0
    max_try: int | None = None
    updated_at: int = 0
    # Task scopes carry their parts so a task's map indices can be found together.
    dag_id: str | None = None
    run_id: str | None = None
    task_id: str | None = None
    map_index: int | None = None


class LogHead(msgspec.Struct, gc=False):
    """The last position handed out and the newest recorded time, so both only grow."""

    last_seq: int = 0
    last_recorded_at: int = 0


class EventFilter(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Which events of one scope to select; every bound is inclusive, oldest first."""

    key: str | None = None
    kinds: frozenset[str] | None = None
    try_number: int | None = None
    since: int | None = None  # recorded_at >= since
    until: int | None = None  # recorded_at <= until
    after_seq: int | None = None  # seq > after_seq
    through_seq: int | None = None  # seq <= through_seq
    through_version: int | None = None  # version <= through_version
    limit: int | None = None
    descending: bool = False


class ScopeFilter(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Which scopes to list, newest first; every given field must match.

    `kind` "task" keeps task scopes (those with a dag_id), "asset" the others. Times are bounds
    on `updated_at`, inclusive. `before` is the cursor of the previous page: the
    (updated_at, scope_id) of its last row; only rows strictly after it in the order are kept.
    """

    kind: str | None = None  # "task" | "asset"
    dag_id: str | None = None
    run_id: str | None = None
    task_id: str | None = None
    since: int | None = None  # updated_at >= since
    until: int | None = None  # updated_at <= until
    before: tuple[int, int] | None = None
    limit: int = 100


class WriteTransaction(ABC):
    """The primitives the log composes into one atomic append of a batch."""

    @abstractmethod
    async def select_head(self) -> LogHead: ...

    @abstractmethod
    async def select_scopes(self, scope_keys: Collection[str]) -> dict[str, ScopeRow]: ...

    async def select_head_and_scopes(
        self, scope_keys: Collection[str]
    ) -> tuple[LogHead, dict[str, ScopeRow]]:
        """The head and these scopes, as the batch starts; a backend may read both at once."""
        return await self.select_head(), await self.select_scopes(scope_keys)

    @abstractmethod
    async def select_task_scopes(self, dag_id: str, run_id: str, task_id: str) -> list[ScopeRow]:
        """Every scope of the task, all map indices."""

    @abstractmethod
    async def select_live_keys(self, scope_id: int, now: int) -> set[str]:
        """The keys of the scope with an unexpired row in the projection."""

    @abstractmethod
    async def select_current_heads(self, scope_id: int, keys: Collection[str]) -> dict[str, bytes]:
        """The first two bytes of the projection value of each of these keys that has a row
        (expired ones included): enough for the store to read a stored value's flags."""

    @abstractmethod
    async def select_idempotent(
        self, keys: Collection[tuple[int, str]]
    ) -> dict[tuple[int, str], bytes]:
        """The stored results of earlier appends, by (scope_id, idempotency id), for these
        pairs: one statement for a whole batch, whatever the number of scopes."""

    @abstractmethod
    async def insert_scope(self, row: ScopeRow) -> int:
        """Insert a new scope and return its id."""

    @abstractmethod
    async def insert_events(self, rows: Sequence[EventRow]) -> None: ...

    @abstractmethod
    async def upsert_current(self, rows: Sequence[CurrentRow]) -> None: ...

    @abstractmethod
    async def delete_current(self, pairs: Sequence[tuple[int, str]]) -> None: ...

    @abstractmethod
    async def clear_current(self, scope_ids: Sequence[int]) -> None: ...

    @abstractmethod
    async def update_scopes(self, rows: Sequence[ScopeRow]) -> None: ...

    @abstractmethod
    async def insert_idempotent(self, rows: Sequence[IdempotentRow]) -> None: ...

    @abstractmethod
    async def update_head(self, head: LogHead) -> None: ...

    @abstractmethod
    async def replace_current(self, rows: Sequence[CurrentRow]) -> None:
        """Replace the whole projection with these rows (rebuild)."""

    # Compaction primitives. Compaction removes events in small batches, each in a write
    # transaction of its own, so appends keep being served between them.

    @abstractmethod
    async def delete_events(self, seqs: Sequence[int]) -> int:
        """Remove the events at these positions; returns how many were there.

        Positions and versions of the events that stay are never changed.
        """

    @abstractmethod
    async def delete_idempotent(self, *, recorded_before: int, limit: int) -> int:
        """Forget up to `limit` idempotency results recorded before this time; returns how many
        went (fewer than `limit`: none is left)."""

    @abstractmethod
    async def delete_current_at(self, rows: Sequence[tuple[int, str, int]]) -> None:
        """Remove projection rows given as (scope_id, key, seq), each only if the row still
        comes from the event at that seq (a concurrent write may have replaced it)."""

    @abstractmethod
    async def update_event_payloads(self, rows: Sequence[tuple[int, bytes]]) -> None:
        """Rewrite the payloads of events, by (seq, payload); a missing seq is skipped.

        Only for a value's stored form changing and its meaning not: sealing a plain value
        (reencrypt) or scrubbing an erased one (eventstore.log.crypto).
        """

    @abstractmethod
    async def update_current_values(self, rows: Sequence[tuple[bytes, int, str, int]]) -> None:
        """Set the projection's value by (value, scope_id, key, seq) where the row is still
        the one written at that seq."""


class LogBackend(ABC):
    """One database holding the event log, the projection and the scope heads."""

    _compaction_held: anyio.Lock | None = None

    @abstractmethod
    def write(self) -> AbstractAsyncContextManager[WriteTransaction]:
        """A write transaction: exclusive among writers, committed when the block exits cleanly."""

    @abstractmethod
    async def select_scope(self, scope_key: str) -> ScopeRow | None: ...

    @abstractmethod
    async def select_current(self, scope_id: int, key: str) -> CurrentRow | None: ...

    @abstractmethod
    async def select_current_all(self, scope_id: int) -> list[CurrentRow]:
        """Every row of the scope's projection, expired ones included, ordered by key."""

    @abstractmethod
    async def select_current_page(
        self, scope_id: int, *, after: str | None, limit: int, now: int
    ) -> list[CurrentRow]:
        """At most `limit` live rows of the scope (unexpired at `now`) with keys after `after`
        (None: from the first), ordered by key (code point order, as Python orders str).

        A page of a listing by keyset: one seek of the (scope_id, key) primary key and `limit`
        rows on, whatever the size of the scope (expired rows not yet compacted are skipped).
        """

    @abstractmethod
    async def select_events(self, scope_id: int, where: EventFilter) -> list[EventRow]: ...

    @abstractmethod
    async def select_last_scope_event(
        self, scope_id: int, kind: str, *, through_seq: int | None = None
    ) -> EventRow | None:
        """The scope's latest key-less event of `kind` ("clear" or "compacted") at or before
        `through_seq` (no bound when None), or None.

        History bounds every point-in-time state by the last clear, and every question by the
        last compaction marker; this is one index seek on (scope_id, key, seq) with key NULL.
        """

    @abstractmethod
    async def select_latest_per_key(
        self, scope_id: int, *, after_seq: int, through_seq: int
    ) -> list[EventRow]:
        """For each key of the scope, its latest event (set or delete) with
        after_seq < seq <= through_seq, in any order.

        This is how a point-in-time state is read without replaying the scope: one index seek
        per key on (scope_id, key, seq), bounded below by the last clear.
        """

    @abstractmethod
    def select_all_events(
        self, *, after_seq: int = 0, batch: int = 1000
    ) -> AsyncIterator[EventRow]:
        """Every event of the log after a position, in position order, streamed in batches."""

    @abstractmethod
    async def select_last_seq(self) -> int:
        """The last position committed (the log head's): a position a reader may tail up to.

        One row read without any lock: live subscribers (eventstore.feed) poll it to learn of
        commits by other processes and replicas. Every position at or below it has committed
        (or been removed by compaction), so a reader can move its cursor up to it.
        """

    @abstractmethod
    async def select_erased_through(self, scope_ids: Collection[int]) -> dict[int, int]:
        """The position of each of these scopes' last `erased` marker, for those that have one.

        One statement for a page of a live subscriber's events, however many scopes it holds
        (one index seek per scope on (scope_id, key, seq) with key NULL).
        """

    @abstractmethod
    async def select_all_scopes(self) -> list[ScopeRow]: ...

    @abstractmethod
    async def select_scopes_page(self, where: ScopeFilter) -> list[ScopeRow]:
        """Scopes most recently written first (updated_at, then scope_id, both descending),
        filtered by `where`, at most `where.limit` of them.

        The listing of the web page's start page; one index walk on (updated_at, scope_id).
        """

    @abstractmethod
    async def select_all_current(self) -> list[CurrentRow]: ...

    @abstractmethod
    async def count_idempotent(self, *, recorded_before: int) -> int:
        """How many idempotency results were recorded before this time."""

    @abstractmethod
    async def select_storage_bytes(self) -> int:
        """The bytes the log takes where it is stored: database files with their write-ahead
        log on SQLite, the relations on PostgreSQL, an estimate of the rows in memory."""

    async def reclaim_space(self, max_pages: int) -> int:
        """Give up to `max_pages` free pages back to the file system, in one short write
        transaction; returns the free pages still left to give back (0: done, or nothing to
        do on this backend, the default). Compaction calls it in a loop after removing events."""
        return 0

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[None]:
        """Hold the log and the projection still while the caller reads both (verify): by
        default under the write lock. A backend opened read-only, which has no write lock,
        reads them in one read transaction instead, where it can."""
        async with self.write():
            yield

    async def checkpoint(self) -> None:  # noqa: B027 (nothing to do is the default)
        """Fold the write-ahead log back into the database and shrink it (SQLite's
        wal_checkpoint(TRUNCATE)); by default nothing, for backends without one."""

    @asynccontextmanager
    async def compaction_lock(self) -> AsyncIterator[None]:
        """Held for a whole compaction, so one compactor at a time runs on the database.

        Never waits: raises `CompactionRunningError` when another compaction holds it. This
        default only knows this backend object (enough for a database only it can open, as in
        memory); backends a second process or replica can open override it with a lock the
        database's other users see too.
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
