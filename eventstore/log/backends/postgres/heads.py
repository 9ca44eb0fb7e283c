"""The writer's lease on the log, and what it knows of the log between its transactions.

One writer at a time, across every process and replica on the database: a writer holds the lease
(a session-level advisory lock) from before it reads the log head until its batch has committed.
Positions handed out from the head it read are therefore committed in the order handed out (see
transaction.py). The lease, unlike a lock on a row, outlives a transaction, so a batch whose
writes all go in one statement runs that statement outside any explicit transaction: it commits
on its own, and gives the lease up in the same round trip. A batch is then two round trips: take
the lease, apply and commit.

That statement gives the lease up just before its transaction commits. The next writer must not
read until it has: the statement also holds a transaction-level advisory lock (the handover),
which the next writer waits for, in shared mode, right after taking the lease.

Every batch plans from the log head, the heads of the scopes it writes and the value heads (the
flags) of their keys. Read afresh, that is a round trip per batch. But when the last transaction
that changed the database was this writer's own, what it read and wrote then is still what the
tables hold, so a batch can plan from that. Whether it was is one comparison, made in the same
message that takes the lease (`TAKE_AND_CHECK`): every write transaction of every tasktrail
process updates the `log_head` row (the statement that applies a batch always does), so the row's
`xmin` is the id of the last transaction that changed anything; and the writer's connection keeps
the id of its own last one in a setting of its session (`tasktrail.head_xmin`, set by that same
statement, so it is rolled back with it). Equal: nobody else wrote since, the heads kept are
current. Different (another process or replica wrote, or the connection is new): the heads are
read again.
"""

from __future__ import annotations

from typing import Final

# Shared with SQLite's writer; named here too, where this backend's modules find its heads.
from eventstore.log.backends.kept_heads import WriterHeads

__all__ = [
    "BEGIN",
    "COMMIT_AND_RELEASE",
    "KEPT",
    "PREPARE_TAKE",
    "RELEASE",
    "RELEASE_ALL",
    "STAMP",
    "TAKE_AND_CHECK",
    "HeadsHolder",
    "WriterHeads",
]

# Two 32-bit keys, as for the compaction lock: a fixed class ("trlw", "trlx") and the schema the
# tables live in, so the logs of different schemas of one database have leases of their own.
_LEASE: Final = "1953655927, hashtext(current_schema())"
_HANDOVER: Final = "1953655928, hashtext(current_schema())"

# One simple-protocol message, one round trip, run as one implicit transaction: take the lease
# (waiting for the writer holding it), wait for the commit of the statement that gave it up,
# then, with a snapshot taken after, compare the committed row's xmin with this session's last
# transaction. The status of the last statement says which: "SELECT 1" when the heads kept are
# current. Three statements because each must see what the one before waited for; each is
# prepared once on the writer's connection (`PREPARE_TAKE`), so the server plans them once per
# session, not once per batch.
PREPARE_TAKE: Final = (
    f"PREPARE tasktrail_lease AS SELECT pg_advisory_lock({_LEASE}); "
    f"PREPARE tasktrail_handover AS SELECT pg_advisory_xact_lock_shared({_HANDOVER}); "
    "PREPARE tasktrail_check AS SELECT 1 FROM log_head WHERE id = 1 "
    "AND xmin::text = current_setting('tasktrail.head_xmin', true)"
)
TAKE_AND_CHECK: Final = (
    "EXECUTE tasktrail_lease; EXECUTE tasktrail_handover; EXECUTE tasktrail_check"
)
KEPT: Final = "SELECT 1"
# A batch that writes more than its one statement (a new scope, deletes, compaction) runs in a
# transaction of its own, begun at its first such write, and gives the lease up once committed.
BEGIN: Final = "BEGIN ISOLATION LEVEL READ COMMITTED"
COMMIT_AND_RELEASE: Final = f"COMMIT; SELECT pg_advisory_unlock({_LEASE})"
RELEASE: Final = f"SELECT pg_advisory_unlock({_LEASE})"
# After a failure, whatever the session holds goes (the writer's connection holds only the lease).
RELEASE_ALL: Final = "SELECT pg_advisory_unlock_all()"
# How the statement that applies a batch ends. It takes the handover lock (joined, so before the
# row is updated), updates log_head, records this transaction's id in the session for the next
# TAKE_AND_CHECK, and, when it is the batch's last statement outside a transaction block ($12),
# gives the lease up: the handover lock is held until its commit.
STAMP: Final = (
    f"FROM (SELECT pg_advisory_xact_lock({_HANDOVER})) AS handover WHERE id = 1 "
    "RETURNING set_config('tasktrail.head_xmin', xmin::text, false), "
    f"CASE WHEN $12::boolean THEN pg_advisory_unlock({_LEASE}) END"
)


class HeadsHolder:
    """Where a backend keeps its writer's heads between transactions (None: not known)."""

    __slots__ = ("heads",)

    def __init__(self) -> None:
        self.heads: WriterHeads | None = None
