"""The SQLite log's schema: its tables and indexes, step by step, and the column lists.

One file holds the log (`events`, positions in `seq`), the head of the log (`log_head`), a row per
scope with its version and latest try (`scopes`), where each try of a scope starts (`tries`), the
current-values projection (`current`) and the results kept for idempotent retries
(`idempotency`). History questions are answered through two indexes of the events per scope:
by version (the scope's order; a time, a position and a try are each found as a range of
versions) and by key (a key's timeline, and the latest event of each key as of a point).
"""

from __future__ import annotations

from typing import Final

from eventstore.log.backends.migrations import (
    IDEMPOTENCY_BY_ID,
    Dialect,
    Migration,
    columns,
    first_steps,
    latest_version,
    log_layout,
)
from eventstore.log.backends.rows import CurrentRow, EventRow, IdempotentRow, ScopeRow

__all__ = [
    "CURRENT_COLUMNS",
    "EVENT_COLUMNS",
    "IDEMPOTENT_COLUMNS",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "SCOPE_COLUMNS",
]

# Column types: integers, the scope id, names and keys, blobs; after a table keyed alone.
_TYPES: Final = Dialect("INTEGER", "INTEGER", "TEXT", "BLOB", " WITHOUT ROWID")

# The schema's history, oldest first; a change to the schema is a new step at the end.
MIGRATIONS: Final = (
    *first_steps(_TYPES),
    Migration(
        4,
        IDEMPOTENCY_BY_ID,
        # Keyed by the id first, ids that grow with time (the client's do) are appended at the
        # end of the index, and a batch's results share a page or two instead of dirtying one
        # page each. SQLite cannot change a primary key in place: the table is made anew.
        # Results kept from before have no time of their own: they count as recorded at the
        # log's newest time.
        (
            """CREATE TABLE idempotency_v4 (
                scope_id INTEGER NOT NULL,
                idempotency_id TEXT NOT NULL,
                result BLOB NOT NULL,
                recorded_at INTEGER NOT NULL,
                PRIMARY KEY (idempotency_id, scope_id)
            ) WITHOUT ROWID""",
            """INSERT INTO idempotency_v4 (scope_id, idempotency_id, result, recorded_at)
            SELECT scope_id, idempotency_id, result, (SELECT last_recorded_at FROM log_head)
            FROM idempotency""",
            """DROP TABLE idempotency""",
            """ALTER TABLE idempotency_v4 RENAME TO idempotency""",
        ),
    ),
    log_layout(_TYPES),
)
SCHEMA_VERSION: Final = latest_version(MIGRATIONS)

EVENT_COLUMNS: Final = columns(EventRow)
CURRENT_COLUMNS: Final = columns(CurrentRow)
SCOPE_COLUMNS: Final = columns(ScopeRow)
IDEMPOTENT_COLUMNS: Final = columns(IdempotentRow)
