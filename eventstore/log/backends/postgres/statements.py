"""The write transaction's statements: constant SQL, every value a parameter (arrays for a batch).

The order of positions and the lock they rest on are explained in `transaction`.
"""

from __future__ import annotations

from typing import Final

from eventstore.log.backends.postgres.driver import (
    CURRENT_COLUMNS,
    EVENT_COLUMNS,
    IDEMPOTENT_COLUMNS,
    SCOPE_COLUMNS,
)
from eventstore.log.backends.postgres.heads import STAMP
from eventstore.log.backends.rows import ScopeRow

__all__ = [
    "APPLY",
    "CLEAR_CURRENT",
    "DELETE_ALL_CURRENT",
    "DELETE_CURRENT",
    "DELETE_CURRENT_AT",
    "DELETE_EVENTS",
    "DELETE_IDEMPOTENT",
    "HEADS_READ",
    "INSERT_SCOPE",
    "SELECT_CURRENT_HEADS",
    "SELECT_HEAD",
    "SELECT_HEAD_AND_SCOPES",
    "SELECT_IDEMPOTENT",
    "SELECT_LIVE_HEADS",
    "SELECT_SCOPES",
    "SELECT_TASK_SCOPES",
    "TRY_COLUMNS",
    "UPDATE_CURRENT_VALUES",
    "UPDATE_PAYLOADS",
]

SELECT_HEAD: Final = "SELECT last_seq, last_recorded_at FROM log_head WHERE id = 1"

# The head and the scopes a batch addresses, in one round trip (the head repeats on every row),
# with the value heads (`select_current_heads`) of each scope's first `HEADS_READ` keys. Each
# write that does not say `sensitive` keeps its key's stored flag, so planning asks for the heads
# of the keys it sets, a round trip per scope; most scopes hold a handful of keys, and for those
# the answer is then already here. A scope with more keys (`HEADS_READ` + 1 come back) is asked
# when planning needs it, as before.
HEADS_READ: Final = 16
SELECT_HEAD_AND_SCOPES: Final = (
    "SELECT h.last_seq, h.last_recorded_at, "
    + ", ".join(f"s.{column}" for column in ScopeRow.__struct_fields__)
    + ", c.keys, c.heads "
    "FROM log_head AS h LEFT JOIN scopes AS s ON s.scope_key = ANY($1::text[]) "
    "LEFT JOIN LATERAL (SELECT array_agg(f.key) AS keys, array_agg(f.head) AS heads FROM ("
    "SELECT key, substring(value FROM 1 FOR 2) AS head FROM current "
    "WHERE scope_id = s.scope_id ORDER BY key LIMIT $2) AS f) AS c ON true WHERE h.id = 1"
)

# The columns of `tries`, in the order of its row type.
TRY_COLUMNS: Final = "scope_id, try_number, first_version"

# A batch's writes to the log, the projection's upserts, the scope heads, the idempotency table,
# the starts of new tries and the head travel in this one statement (one round trip): each
# data-modifying WITH runs exactly once, and they touch different tables, so their order does not
# matter. The rows of a table go as one array of its row type, each row a tuple in the order of
# its columns (`driver.EVENT_COLUMNS` …, the order of the table's row type too; a test holds them
# equal): the driver encodes a tuple per row, not a value per column and row, and the server
# unnests one array instead of zipping one per column.
APPLY: Final = (
    f"WITH new_events AS (INSERT INTO events ({EVENT_COLUMNS}) "
    f"SELECT {EVENT_COLUMNS} FROM unnest($1::events[])), "
    f"new_current AS (INSERT INTO current ({CURRENT_COLUMNS}) "
    f"SELECT {CURRENT_COLUMNS} FROM unnest($2::current[]) "
    "ON CONFLICT (scope_id, key) DO UPDATE SET value = excluded.value, "
    "expires_at = excluded.expires_at, version = excluded.version, seq = excluded.seq, "
    "updated_at = excluded.updated_at), "
    "scope_heads AS (UPDATE scopes AS s SET version = u.version, max_try = u.max_try, "
    "updated_at = u.updated_at "
    "FROM unnest($3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[]) "
    "AS u (scope_id, version, max_try, updated_at) WHERE s.scope_id = u.scope_id), "
    f"new_idempotent AS (INSERT INTO idempotency ({IDEMPOTENT_COLUMNS}) "
    f"SELECT {IDEMPOTENT_COLUMNS} FROM unnest($7::idempotency[])), "
    f"new_tries AS (INSERT INTO tries ({TRY_COLUMNS}) "
    f"SELECT {TRY_COLUMNS} FROM unnest($8::tries[]) ON CONFLICT DO NOTHING) "
    # Always: the row's new xmin tells every writer that this transaction changed the database.
    "UPDATE log_head SET last_seq = CASE WHEN $11::boolean THEN $9 ELSE last_seq END, "
    "last_recorded_at = CASE WHEN $11::boolean THEN $10 ELSE last_recorded_at END "
    f"{STAMP}"
)
DELETE_CURRENT: Final = (
    "DELETE FROM current AS c USING unnest($1::bigint[], $2::bytea[]) AS d (scope_id, key) "
    "WHERE c.scope_id = d.scope_id AND c.key = d.key"
)
CLEAR_CURRENT: Final = "DELETE FROM current WHERE scope_id = ANY($1::bigint[])"

# Compaction: events by position, and projection rows only while they still come from the event
# compaction removes (a concurrent write may have replaced one).
DELETE_EVENTS: Final = "DELETE FROM events WHERE seq = ANY($1::bigint[])"

# Old idempotency results, a few hundred at a time (each batch its own short transaction).
DELETE_IDEMPOTENT: Final = (
    "DELETE FROM idempotency WHERE ctid = ANY(ARRAY("
    "SELECT ctid FROM idempotency WHERE recorded_at < $1 LIMIT $2))"
)
DELETE_CURRENT_AT: Final = (
    "DELETE FROM current AS c "
    "USING unnest($1::bigint[], $2::bytea[], $3::bigint[]) AS d (scope_id, key, seq) "
    "WHERE c.scope_id = d.scope_id AND c.key = d.key AND c.seq = d.seq"
)
DELETE_ALL_CURRENT: Final = "DELETE FROM current"
UPDATE_PAYLOADS: Final = (
    "UPDATE events AS e SET payload = u.payload "
    "FROM unnest($1::bigint[], $2::bytea[]) AS u (seq, payload) WHERE e.seq = u.seq"
)
UPDATE_CURRENT_VALUES: Final = (
    "UPDATE current AS c SET value = u.value "
    "FROM unnest($1::bytea[], $2::bigint[], $3::bytea[], $4::bigint[]) "
    "AS u (value, scope_id, key, seq) "
    "WHERE c.scope_id = u.scope_id AND c.key = u.key AND c.seq = u.seq"
)

# Every (scope_id, id) pair of a batch in one statement: two parallel arrays, unnested.
SELECT_IDEMPOTENT: Final = (
    "SELECT i.scope_id, i.idempotency_id, i.result FROM idempotency AS i "
    "JOIN unnest($1::bigint[], $2::bytea[]) AS w (scope_id, idempotency_id) "
    "ON i.scope_id = w.scope_id AND i.idempotency_id = w.idempotency_id"
)
# Every column but the identity, which the server hands out.
INSERT_SCOPE: Final = (
    f"INSERT INTO scopes ({', '.join(ScopeRow.__struct_fields__[1:])}) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING scope_id"
)
SELECT_SCOPES: Final = f"SELECT {SCOPE_COLUMNS} FROM scopes WHERE scope_key = ANY($1::text[])"
SELECT_TASK_SCOPES: Final = (
    f"SELECT {SCOPE_COLUMNS} FROM scopes WHERE dag_id = $1 AND run_id = $2 AND task_id = $3"
)

# The flags of stored values (eventstore.log.envelope) are in their first two bytes.
# The value heads of (scope_id, key) pairs of any scopes, in one statement.
SELECT_CURRENT_HEADS: Final = (
    "SELECT c.scope_id, c.key, substring(c.value FROM 1 FOR 2) FROM current AS c "
    "JOIN unnest($1::bigint[], $2::bytea[]) AS w (scope_id, key) "
    "ON c.scope_id = w.scope_id AND c.key = w.key"
)
# The value heads of every key of a scope unexpired at a time.
SELECT_LIVE_HEADS: Final = (
    "SELECT key, substring(value FROM 1 FOR 2) FROM current "
    "WHERE scope_id = $1 AND (expires_at IS NULL OR expires_at > $2)"
)
