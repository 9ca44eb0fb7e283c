"""What a writer knows of the log between its transactions: the heads it read and wrote.

Every batch plans from the log head, the heads of the scopes it writes, the value heads (the
flags) of their keys and whether a try's start is recorded. Read afresh, that is a few statements
per batch. But when the last transaction that changed the database was this writer's own, what it
read and wrote then is still what the tables hold, so a batch can plan from that. Whether it was
is each backend's to tell, under its write lock: PostgreSQL compares log_head's xmin with its own
last transaction (postgres/heads.py), SQLite asks `PRAGMA data_version` (sqlite/backend.py). When
it was not, or a transaction did not commit, the backend starts from a new, empty `WriterHeads`.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Final

from msgspec.structs import replace

from eventstore.log.backends.rows import Ids, Keys, KeysAt, LogHead, ScopeRow

__all__ = ["VALUE_HEADS_KEPT", "WriterHeads"]

# Bounds on what is kept, so a writer of many scopes does not grow without end: the oldest
# scopes go first; the value heads of a scope are kept while it holds few keys.
_SCOPES_KEPT: Final = 8192
VALUE_HEADS_KEPT: Final = 64


class WriterHeads:
    """The heads a writer knows, as its last committed transaction left them.

    `scopes` maps a scope key to its row, or None for a scope known not to exist yet; `values`
    the value heads of every key of a scope, for scopes known whole; `many` the scopes known to
    hold more keys than that (their value heads are asked for key by key); `tries` the highest
    try of a scope known to have its start recorded in `tries`.
    """

    __slots__ = ("head", "many", "scopes", "tries", "values")

    def __init__(self) -> None:
        self.head: LogHead | None = None
        self.scopes: dict[str, ScopeRow | None] = {}
        self.values: dict[int, dict[str, bytes]] = {}
        self.many: set[int] = set()
        self.tries: dict[int, int] = {}

    def known(self, scope_keys: list[str]) -> dict[str, ScopeRow] | None:
        """Copies of these scopes' rows (the batch changes them as it plans), or None when one
        of them is not known."""
        found, missing = self.split(scope_keys)
        return None if missing else found

    def split(self, scope_keys: Collection[str]) -> tuple[dict[str, ScopeRow], list[str]]:
        """Copies of the rows of the scopes known to exist, and the keys not known at all."""
        scopes = self.scopes
        found: dict[str, ScopeRow] = {}
        missing: list[str] = []
        for key in scope_keys:
            if key not in scopes:
                missing.append(key)
                continue
            row = scopes[key]
            if row is not None:
                found[key] = replace(row)
        return found, missing

    def keep_scope(self, row: ScopeRow) -> None:
        scopes = self.scopes
        scopes.pop(row.scope_key, None)  # to the end: the oldest scopes are dropped first
        scopes[row.scope_key] = replace(row)
        if len(scopes) > _SCOPES_KEPT:
            oldest = next(iter(scopes))
            dropped = scopes.pop(oldest)
            if dropped is not None:
                self.values.pop(dropped.scope_id, None)
                self.many.discard(dropped.scope_id)
                self.tries.pop(dropped.scope_id, None)

    def keep_absent(self, scope_key: str) -> None:
        self.scopes[scope_key] = None

    def keep_values(self, scope_id: int, heads: dict[str, bytes]) -> None:
        if len(heads) <= VALUE_HEADS_KEPT:
            self.values[scope_id] = heads
        else:
            self.keep_many(scope_id)

    def keep_many(self, scope_id: int) -> None:
        many = self.many
        if len(many) >= _SCOPES_KEPT:
            many.clear()  # forgotten, they are read again: bounded like the scopes
        many.add(scope_id)

    def set_value(self, scope_id: int, key: str, head: bytes) -> None:
        heads = self.values.get(scope_id)
        if heads is not None:
            heads[key] = head
            if len(heads) > VALUE_HEADS_KEPT:
                del self.values[scope_id]
                self.keep_many(scope_id)

    def deleted_current(
        self, keys: Keys = (), *, keys_at: KeysAt = (), scope_ids: Ids = (), every: bool = False
    ) -> None:
        """Follow the deletes of `WriteTransaction.delete_current` (same arguments)."""
        if every:
            self.values.clear()
            self.many.clear()
        for scope_id in scope_ids:
            if scope_id in self.values or scope_id in self.many:
                self.many.discard(scope_id)
                self.values[scope_id] = {}
        for scope_id, key in keys:
            self.values.get(scope_id, {}).pop(key, None)
        for scope_id, _, _ in keys_at:  # only while still that seq's: what is left is not known
            self.values.pop(scope_id, None)

    def new_tries(self, starts: dict[tuple[int, int], int]) -> dict[tuple[int, int], int]:
        """The try starts not recorded yet. Fencing refuses writes of a try below a scope's
        latest, so a try at most the highest one recorded has its start recorded already."""
        tries = self.tries
        return {
            (scope_id, try_number): version
            for (scope_id, try_number), version in starts.items()
            if try_number > tries.get(scope_id, -1)
        }

    def record_tries(self, starts: dict[tuple[int, int], int]) -> None:
        tries = self.tries
        for scope_id, try_number in starts:
            if try_number > tries.get(scope_id, -1):
                tries[scope_id] = try_number
