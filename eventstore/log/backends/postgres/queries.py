"""The PostgreSQL log's reads outside a write transaction: constant SQL, values as parameters."""

from __future__ import annotations

import re
from typing import Any, Final

from eventstore.log.backends.postgres.driver import (
    CURRENT_COLUMNS,
    EVENT_COLUMNS,
    SCOPE_COLUMNS,
    encode,
)
from eventstore.log.backends.rows import EventFilter
from eventstore.log.backends.versions import version_through

SELECT_HEAD: Final = "SELECT last_seq, last_recorded_at FROM log_head WHERE id = 1"
COUNT_IDEMPOTENT: Final = "SELECT count(*) FROM idempotency WHERE recorded_at < $1"

# The tables of the store's schema, with their indexes and TOAST. PostgreSQL does not give the
# space of removed rows back to the file system (only VACUUM FULL would, under an exclusive
# lock); autovacuum makes it reusable for new rows, so the size stops growing instead.
SELECT_STORAGE_BYTES: Final = (
    "SELECT COALESCE(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class AS c "
    "WHERE c.relkind = 'r' AND c.relnamespace = current_schema()::regnamespace"
)
SELECT_SCOPE: Final = f"SELECT {SCOPE_COLUMNS} FROM scopes WHERE scope_key = $1"
SELECT_CURRENT: Final = f"SELECT {CURRENT_COLUMNS} FROM current WHERE scope_id = $1 AND key = $2"
SELECT_CURRENT_ALL: Final = (
    f"SELECT {CURRENT_COLUMNS} FROM current WHERE scope_id = $1 ORDER BY key"
)

# Keys are bytea (UTF-8), ordered bytewise: code point order, as Python orders str. Keys are
# never empty, so '' stands for "from the first key".
SELECT_CURRENT_PAGE: Final = (
    f"SELECT {CURRENT_COLUMNS} FROM current WHERE scope_id = $1 AND key > $2 "
    "AND (expires_at IS NULL OR expires_at > $3) ORDER BY key LIMIT $4"
)
SELECT_ALL_EVENTS: Final = (
    f"SELECT {EVENT_COLUMNS} FROM events WHERE seq > $1 ORDER BY seq LIMIT $2"
)
NO_BOUND: Final = 2**63 - 1
# Below every expiry time: a page read without `now` keeps expired rows too.
NO_NOW: Final = -(2**63)

# A marker (a clear, a compaction, an erasure) has no key: each scope's last one of a kind is
# one seek on the (scope_id, key, seq) index.
SELECT_MARKERS: Final = (
    f"SELECT e.* FROM unnest($1::bigint[]) AS s (id) CROSS JOIN unnest($2::text[]) AS k (kind) "
    f"CROSS JOIN LATERAL (SELECT {EVENT_COLUMNS} FROM events WHERE scope_id = s.id "
    "AND key IS NULL AND kind = k.kind AND seq <= $3 ORDER BY seq DESC LIMIT 1) AS e"
)

# The latest event of every key in ($2, $3]. The recursive part walks the scope's distinct keys
# by skipping along the (scope_id, key, seq) index, one seek per key, instead of reading every
# event of the scope; the lateral part then seeks each key's latest event at or before $3.
SELECT_LATEST_PER_KEY: Final = f"""
WITH RECURSIVE keys (key) AS (
    (SELECT key FROM events WHERE scope_id = $1 AND key IS NOT NULL ORDER BY key LIMIT 1)
    UNION ALL
    SELECT (
        SELECT e.key FROM events AS e WHERE e.scope_id = $1 AND e.key > keys.key
        ORDER BY e.key LIMIT 1
    )
    FROM keys WHERE keys.key IS NOT NULL
)
SELECT last.* FROM keys CROSS JOIN LATERAL (
    SELECT {EVENT_COLUMNS} FROM events AS e
    WHERE e.scope_id = $1 AND e.key = keys.key AND e.seq <= $3
    ORDER BY e.seq DESC LIMIT 1
) AS last
WHERE keys.key IS NOT NULL AND last.seq > $2"""
SELECT_ALL_SCOPES: Final = f"SELECT {SCOPE_COLUMNS} FROM scopes ORDER BY scope_id"

# Each filter is a parameter that is either NULL (no filter) or the value to match, so one
# statement serves every combination; the cursor is (updated_at, scope_id) of the last row seen,
# compared as a row so the walk down scopes_by_updated resumes right after it.
SELECT_SCOPES_PAGE: Final = (
    f"SELECT {SCOPE_COLUMNS} FROM scopes "
    "WHERE ($1::text IS NULL OR ($1::text = 'task') = (dag_id IS NOT NULL)) "
    "AND ($2::bytea IS NULL OR dag_id = $2::bytea) "
    "AND ($3::bytea IS NULL OR run_id = $3::bytea) "
    "AND ($4::bytea IS NULL OR task_id = $4::bytea) "
    "AND ($5::bigint IS NULL OR updated_at >= $5::bigint) "
    "AND ($6::bigint IS NULL OR updated_at <= $6::bigint) "
    "AND ($7::bigint IS NULL OR (updated_at, scope_id) < ($7::bigint, $8::bigint)) "
    "ORDER BY updated_at DESC, scope_id DESC LIMIT $9"
)
SELECT_ALL_CURRENT: Final = f"SELECT {CURRENT_COLUMNS} FROM current"

# The event filters: each present bound adds its clause, a range of the scope's versions (or,
# with a key, of the key's positions), so there are finitely many query texts, each prepared
# once; values only ever travel as parameters (`:name`, numbered $n when the text is made).
_EVENT_CLAUSES: Final = (
    ("key", "key = :key"),
    ("kinds", "kind = ANY(:kinds::text[])"),
    # Fencing keeps every event of try N from the start of try N to the start of the next
    # higher try; tries holds where each starts.
    (
        "try_number",
        "try_number = :try_number "
        "AND version >= (SELECT first_version FROM tries "
        "WHERE scope_id = :scope AND try_number = :try_number) "
        "AND version < coalesce((SELECT min(first_version) FROM tries "
        "WHERE scope_id = :scope AND try_number > :try_number), :no_bound)",
    ),
    ("since", f"recorded_at >= :since AND version > {version_through('recorded_at', 'before')}"),
    ("until", f"recorded_at <= :until AND version <= {version_through('recorded_at', 'until')}"),
    # The next page after an event of this scope starts past that event's version: one seek.
    # A cursor from elsewhere (a global position) is found by the search.
    (
        "after_seq",
        "seq > :after_seq AND version > coalesce("
        "(SELECT e.version FROM events AS e WHERE e.seq = :after_seq AND e.scope_id = :scope), "
        f"{version_through('seq', 'after_seq')})",
    ),
    ("through_seq", f"seq <= :through_seq AND version <= {version_through('seq', 'through_seq')}"),
    ("through_version", "version <= :through_version"),
)
_PARAMETER: Final = re.compile(r"(?<!:):([a-z_]+)\b")

_events_sql: dict[tuple[bool, ...], tuple[str, tuple[str, ...]]] = {}


def events_query(scope_id: int, where: EventFilter) -> tuple[str, list[Any]]:
    values: dict[str, Any] = {
        "scope": scope_id,
        "key": encode(where.key),
        "kinds": None if where.kinds is None else sorted(where.kinds),
        "try_number": where.try_number,
        "since": where.since,
        "until": where.until,
        "after_seq": where.after_seq,
        "through_seq": where.through_seq,
        "through_version": where.through_version,
        "limit": where.limit,
        "before": None if where.since is None else where.since - 1,
        "no_bound": NO_BOUND,
    }
    present = tuple(values[name] is not None for name, _ in _EVENT_CLAUSES)
    shape = (*present, where.limit is not None, where.descending)
    made = _events_sql.get(shape)
    if made is None:
        clauses = ["scope_id = :scope"]
        for (_, clause), used in zip(_EVENT_CLAUSES, present, strict=True):
            if used:
                clauses.append(clause)
        # Within one scope, ordering by version is ordering by seq; with a key, the
        # (scope_id, key, seq) index yields the rows in order.
        order = "DESC" if where.descending else "ASC"
        ordering = f"seq {order}" if where.key is not None else f"version {order}"
        text = (
            f"SELECT {EVENT_COLUMNS} FROM events WHERE {' AND '.join(clauses)} ORDER BY {ordering}"
        )
        if where.limit is not None:
            text += " LIMIT :limit"
        made = _events_sql[shape] = _numbered(text)
    sql, names = made
    return sql, [values[name] for name in names]


def _numbered(text: str) -> tuple[str, tuple[str, ...]]:
    """`text` with each `:name` as $n (one number per name), and the names in number order."""
    names: dict[str, int] = {}

    def number(found: re.Match[str]) -> str:
        return f"${names.setdefault(found[1], len(names) + 1)}"

    return _PARAMETER.sub(number, text), tuple(names)
