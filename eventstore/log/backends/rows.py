"""The rows a backend stores and the filters it selects them by: plain Structs, whose fields
are the column lists of the tables (the SQL backends name their columns after them)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Final

import msgspec

__all__ = [
    "EVERY_ROW",
    "CurrentFilter",
    "CurrentRow",
    "EventFilter",
    "EventRow",
    "IdempotentRow",
    "Ids",
    "Insert",
    "Keys",
    "KeysAt",
    "LogHead",
    "Pairs",
    "Payloads",
    "ScopeFilter",
    "ScopeRow",
    "Storage",
    "Task",
    "Values",
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


class Insert(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """What one `WriteTransaction.insert` writes: events and idempotency results inserted,
    projection rows upserted (by scope_id and key), scopes inserted (scope_id 0: a new one, its
    id handed out) or their heads updated (version, max_try, updated_at), and the log head."""

    events: Sequence[EventRow] = ()
    current: Sequence[CurrentRow] = ()
    scopes: Sequence[ScopeRow] = ()
    idempotent: Sequence[IdempotentRow] = ()
    head: LogHead | None = None


class Storage(msgspec.Struct, frozen=True, gc=False):
    """The bytes the log takes, and how many idempotency results are older than asked."""

    bytes: int
    idempotent_before: int = 0


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

    def matches(self, row: EventRow) -> bool:
        """Whether `row` passes every bound (`limit` and order aside), for reads made in Python."""
        return (
            (self.key is None or row.key == self.key)
            and (self.kinds is None or row.kind in self.kinds)
            and (self.try_number is None or row.try_number == self.try_number)
            and (self.since is None or row.recorded_at >= self.since)
            and (self.until is None or row.recorded_at <= self.until)
            and (self.after_seq is None or row.seq > self.after_seq)
            and (self.through_seq is None or row.seq <= self.through_seq)
            and (self.through_version is None or row.version <= self.through_version)
        )


class CurrentFilter(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Which projection rows to select, by key in code point order (as Python orders str)."""

    key: str | None = None
    after_key: str | None = None  # key > after_key
    now: int | None = None  # unexpired at now: expires_at is None or expires_at > now
    limit: int | None = None

    def matches(self, row: CurrentRow) -> bool:
        """Whether `row` passes every bound (`limit` aside), for reads made in Python."""
        return (
            (self.key is None or row.key == self.key)
            and (self.after_key is None or row.key > self.after_key)
            and (self.now is None or row.expires_at is None or row.expires_at > self.now)
        )

    def keep(self, rows: list[CurrentRow]) -> list[CurrentRow]:
        """Of rows read by `key`, those that pass the other bounds: all of them when nothing
        else bounds them, so the store's get (a point read) pays for no check."""
        if self.after_key is None and self.now is None and self.limit is None:
            return rows
        return [r for r in rows if self.matches(r)][: self.limit]


EVERY_ROW: Final = CurrentFilter()


class ScopeFilter(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Which scopes to list, newest first; every given field must match.

    `scope_key` picks one scope (one seek of its unique index). `kind` "task" keeps task scopes
    (those with a dag_id), "asset" the others. Times are bounds on `updated_at`, inclusive.
    `before` is the cursor of the previous page: the (updated_at, scope_id) of its last row; only
    rows strictly after it in the order are kept. `limit` None: no limit.
    """

    scope_key: str | None = None
    kind: str | None = None  # "task" | "asset"
    dag_id: str | None = None
    run_id: str | None = None
    task_id: str | None = None
    since: int | None = None  # updated_at >= since
    until: int | None = None  # updated_at <= until
    before: tuple[int, int] | None = None
    limit: int | None = 100

    def matches(self, row: ScopeRow) -> bool:
        """Whether `row` passes every field (`limit` aside), for reads made in Python."""
        return (
            (self.scope_key is None or row.scope_key == self.scope_key)
            and (self.kind is None or (self.kind == "task") == (row.dag_id is not None))
            and (self.dag_id is None or row.dag_id == self.dag_id)
            and (self.run_id is None or row.run_id == self.run_id)
            and (self.task_id is None or row.task_id == self.task_id)
            and (self.since is None or row.updated_at >= self.since)
            and (self.until is None or row.updated_at <= self.until)
            and (self.before is None or (row.updated_at, row.scope_id) < self.before)
        )


# A task as (dag_id, run_id, task_id).
Task = tuple[str, str, str]
# The rows `delete_current` removes: (scope_id, key), (scope_id, key, seq), scope ids.
Keys = Sequence[tuple[int, str]]
KeysAt = Sequence[tuple[int, str, int]]
Ids = Sequence[int]
# What `update_stored` rewrites: (seq, payload) and (value, scope_id, key, seq).
Payloads = Sequence[tuple[int, bytes]]
Values = Sequence[tuple[bytes, int, str, int]]
# Rows named by (scope_id, key), or by (scope_id, idempotency id).
Pairs = Collection[tuple[int, str]]
