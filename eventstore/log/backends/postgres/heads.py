"""What the writer of a process knows of the log between its transactions, and when it may trust it.

Every batch plans from the log head, the heads of the scopes it writes and the value heads (the
flags) of their keys. Read afresh, that is a round trip per batch. But when the last transaction
that changed the database was this writer's own, what it read and wrote then is still what the
tables hold, so a batch can plan from that.

Whether it was is one comparison, made in the same message that begins the transaction and takes
the write lock (`BEGIN_AND_CHECK`): every write transaction of every tasktrail process updates the
`log_head` row (the statement that applies a batch always does), so the row's `xmin` is the id of
the last transaction that changed anything; and the writer's connection keeps the id of its own
last one in a setting of its session (`tasktrail.head_xmin`, set by that same statement, so it is
rolled back with it). Equal: nobody else wrote since, the heads kept are current. Different (another
process or replica wrote, or the connection is new): the heads are read again, as before.
"""

from __future__ import annotations

from typing import Final

from msgspec.structs import replace

from eventstore.log.backends.rows import LogHead, ScopeRow

__all__ = ["BEGIN_AND_CHECK", "KEPT", "STAMP", "HeadsHolder", "WriterHeads"]

# Positions are handed out in commit order from the head read under the lock on the log_head row
# (see transaction.py). The lock is taken first, by a statement of its own (at READ COMMITTED it
# waits for the writer holding it); the next statement, with a snapshot taken after, then compares
# the committed row's xmin with this session's last transaction. (One statement with the filter
# around the locking one would not do: the planner may filter below the lock, and a row filtered
# out is not locked.) One simple-protocol message, one round trip; the status of its last
# statement says which: "SELECT 1" when the heads kept are current.
BEGIN_AND_CHECK: Final = (
    "BEGIN ISOLATION LEVEL READ COMMITTED; "
    "SELECT 1 FROM log_head WHERE id = 1 FOR UPDATE; "
    "SELECT 1 FROM log_head WHERE id = 1 "
    "AND xmin::text = current_setting('tasktrail.head_xmin', true)"
)
KEPT: Final = "SELECT 1"
# What the update of log_head returns: it records this transaction's id in the session, for the
# next BEGIN_AND_CHECK to compare.
STAMP: Final = "RETURNING set_config('tasktrail.head_xmin', xmin::text, false)"

# Bounds on what is kept, so a writer of many scopes does not grow without end: the oldest
# scopes go first; the value heads of a scope are kept while it holds few keys.
_SCOPES_KEPT: Final = 8192
_VALUE_HEADS_KEPT: Final = 64


class WriterHeads:
    """The heads a writer knows, as its last committed transaction left them.

    `scopes` maps a scope key to its row, or None for a scope known not to exist yet; `values`
    the value heads of every key of a scope, for scopes known whole; `tries` the highest try of
    a scope known to have its start recorded in `tries`.
    """

    __slots__ = ("head", "scopes", "tries", "values")

    def __init__(self) -> None:
        self.head: LogHead | None = None
        self.scopes: dict[str, ScopeRow | None] = {}
        self.values: dict[int, dict[str, bytes]] = {}
        self.tries: dict[int, int] = {}

    def known(self, scope_keys: list[str]) -> dict[str, ScopeRow] | None:
        """Copies of these scopes' rows (the batch changes them as it plans), or None when one
        of them is not known."""
        scopes = self.scopes
        found: dict[str, ScopeRow] = {}
        for key in scope_keys:
            if key not in scopes:
                return None
            row = scopes[key]
            if row is not None:
                found[key] = replace(row)
        return found

    def keep_scope(self, row: ScopeRow) -> None:
        scopes = self.scopes
        scopes.pop(row.scope_key, None)  # to the end: the oldest scopes are dropped first
        scopes[row.scope_key] = replace(row)
        if len(scopes) > _SCOPES_KEPT:
            oldest = next(iter(scopes))
            dropped = scopes.pop(oldest)
            if dropped is not None:
                self.values.pop(dropped.scope_id, None)
                self.tries.pop(dropped.scope_id, None)

    def keep_absent(self, scope_key: str) -> None:
        self.scopes[scope_key] = None

    def keep_values(self, scope_id: int, heads: dict[str, bytes]) -> None:
        if len(heads) <= _VALUE_HEADS_KEPT:
            self.values[scope_id] = heads

    def set_value(self, scope_id: int, key: str, head: bytes) -> None:
        heads = self.values.get(scope_id)
        if heads is not None:
            heads[key] = head
            if len(heads) > _VALUE_HEADS_KEPT:
                del self.values[scope_id]

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


class HeadsHolder:
    """Where a backend keeps its writer's heads between transactions (None: not known)."""

    __slots__ = ("heads",)

    def __init__(self) -> None:
        self.heads: WriterHeads | None = None
