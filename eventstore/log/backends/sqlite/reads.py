"""The SQLite log's reads: point reads on the loop thread, history and scans in aiosqlite's.

Point reads (a scope by key, one scope's current values: a key, all of them or a page) run on
the loop thread, on a connection of their own: in WAL mode they never wait for a writer,
and each one is a new autocommit statement, so it sees every committed write, including those of
other processes. Long reads (history, the whole log) go through aiosqlite's thread so they do not
stall the loop.

History questions become ranges of the (scope_id, version) index, or with a key, of the
(scope_id, key, seq) index (`_events_query`): the index then yields the rows in order, and a
LIMIT 1 (where a point lands) is a seek, not a walk of the scope.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Collection
from typing import Any, Final

import aiosqlite
import anyio
import msgspec

from eventstore.log.backends import rows as shape
from eventstore.log.backends.base import LogBackend
from eventstore.log.backends.rows import CurrentRow, EventFilter, EventRow, LogHead, ScopeRow
from eventstore.log.backends.sqlite.files import Translating, translate
from eventstore.log.backends.sqlite.pragmas import SELECT_PAGE_BYTES
from eventstore.log.backends.sqlite.schema import CURRENT_COLUMNS, EVENT_COLUMNS, SCOPE_COLUMNS
from eventstore.log.backends.versions import version_through
from eventstore.log.errors import StoreClosedError

__all__ = ["SQLiteReads"]

_encode_json = msgspec.json.Encoder().encode

_SELECT_CURRENT: Final = f"SELECT {CURRENT_COLUMNS} FROM current WHERE scope_id = ? AND key = ?"

# A get's point read: the value alone, of a row unexpired at the given time. One column, as
# sqlite3 describes every column a statement returns (a name and a tuple each) at each execute.
_SELECT_VALUE: Final = (
    "SELECT value FROM current WHERE scope_id = ? AND key = ? "
    "AND (expires_at IS NULL OR expires_at > ?)"
)

_SELECT_CURRENT_ALL: Final = (
    f"SELECT {CURRENT_COLUMNS} FROM current WHERE scope_id = ? ORDER BY key"
)

# Keys are never empty, so '' stands for "from the first key".
_SELECT_CURRENT_PAGE: Final = (
    f"SELECT {CURRENT_COLUMNS} FROM current WHERE scope_id = ? AND key > ? "
    "AND (expires_at IS NULL OR expires_at > ?) ORDER BY key LIMIT ?"
)

_SELECT_SCOPE: Final = f"SELECT {SCOPE_COLUMNS} FROM scopes WHERE scope_key = ?"
_SELECT_ALL_SCOPES: Final = f"SELECT {SCOPE_COLUMNS} FROM scopes ORDER BY scope_id"
_SELECT_ALL_CURRENT: Final = f"SELECT {CURRENT_COLUMNS} FROM current"
# Below every expiry time: a page read without `now` keeps expired rows too.
_NO_NOW: Final = -(2**63)

# Each filter is a parameter that is either NULL (no filter) or the value to match, so one
# statement serves every combination; the cursor is (updated_at, scope_id) of the last row seen.
_SELECT_SCOPES_PAGE: Final = (
    f"SELECT {SCOPE_COLUMNS} FROM scopes "
    "WHERE (:kind IS NULL OR (:kind = 'task') = (dag_id IS NOT NULL)) "
    "AND (:dag_id IS NULL OR dag_id = :dag_id) "
    "AND (:run_id IS NULL OR run_id = :run_id) "
    "AND (:task_id IS NULL OR task_id = :task_id) "
    "AND (:since IS NULL OR updated_at >= :since) "
    "AND (:until IS NULL OR updated_at <= :until) "
    "AND (:before_at IS NULL OR updated_at < :before_at "
    "OR (updated_at = :before_at AND scope_id < :before_id)) "
    "ORDER BY updated_at DESC, scope_id DESC LIMIT :limit"
)

_COUNT_IDEMPOTENT: Final = "SELECT count(*) FROM idempotency WHERE recorded_at < ?"

_SELECT_HEAD: Final = "SELECT last_seq, last_recorded_at FROM log_head"

_SELECT_ALL_EVENTS: Final = f"SELECT {EVENT_COLUMNS} FROM events WHERE seq > ? ORDER BY seq LIMIT ?"

_NO_BOUND: Final = 2**63 - 1

# A marker (a clear, a compaction, an erasure) has no key, so the (scope_id, key, seq) index
# finds each scope's last one of a kind with one seek; the scopes and kinds travel as JSON arrays.
_SELECT_MARKERS: Final = f"""
SELECT {EVENT_COLUMNS} FROM events WHERE seq IN (
    SELECT (
        SELECT e.seq FROM events AS e WHERE e.scope_id = s.value AND e.key IS NULL
        AND e.kind = k.value AND e.seq <= :through ORDER BY e.seq DESC LIMIT 1
    ) FROM json_each(:scopes) AS s, json_each(:kinds) AS k
)"""

# The latest event of every key in (after_seq, through_seq]. The recursive part walks the distinct
# keys of the scope by skipping along the (scope_id, key, seq) index, one seek per key, instead of
# reading every index entry of the scope; then one more seek per key finds its latest event.
_SELECT_LATEST_PER_KEY: Final = f"""
WITH RECURSIVE keys(key) AS (
    SELECT MIN(key) FROM events WHERE scope_id = :scope AND key IS NOT NULL
    UNION ALL
    SELECT (SELECT MIN(e.key) FROM events AS e WHERE e.scope_id = :scope AND e.key > keys.key)
    FROM keys WHERE keys.key IS NOT NULL
)
SELECT {EVENT_COLUMNS} FROM events WHERE seq IN (
    SELECT (
        SELECT MAX(e.seq) FROM events AS e
        WHERE e.scope_id = :scope AND e.key = keys.key AND e.seq <= :through
    ) AS last
    FROM keys WHERE keys.key IS NOT NULL
) AND seq > :after"""


_BOUNDS: Final = {
    "key": "key = :key",
    # Fencing keeps every event of try N from the start of try N to the start of the next
    # higher try; tries holds where each starts.
    "try_number": (
        "try_number = :try_number "
        "AND version >= (SELECT first_version FROM tries "
        "WHERE scope_id = :scope AND try_number = :try_number) "
        "AND version < coalesce((SELECT min(first_version) FROM tries "
        "WHERE scope_id = :scope AND try_number > :try_number), :no_bound)"
    ),
    "since": f"recorded_at >= :since AND version > {version_through('recorded_at', 'before')}",
    "until": f"recorded_at <= :until AND version <= {version_through('recorded_at', 'until')}",
    # The next page after an event of this scope starts past that event's version: one seek.
    # A cursor from elsewhere (a global position) is found by the search.
    "after_seq": (
        "seq > :after_seq AND version > coalesce("
        "(SELECT e.version FROM events AS e WHERE e.seq = :after_seq AND e.scope_id = :scope), "
        f"{version_through('seq', 'after_seq')})"
    ),
    "through_seq": (f"seq <= :through_seq AND version <= {version_through('seq', 'through_seq')}"),
    "through_version": "version <= :through_version",
}


def _events_query(scope_id: int, where: EventFilter) -> tuple[str, dict[str, Any]]:
    """The statement for `where`: every bound is a range of the scope's versions (or, with a
    key, of the key's positions), so an index yields the rows in order and a LIMIT 1 is a seek."""
    clauses = ["scope_id = :scope"]
    params: dict[str, Any] = {"scope": scope_id}
    for name in _BOUNDS:
        value = getattr(where, name)
        if value is not None:
            clauses.append(_BOUNDS[name])
            params[name] = value
    if where.since is not None:
        params["before"] = where.since - 1
    if where.try_number is not None:
        params["no_bound"] = _NO_BOUND
    if where.kinds is not None:
        names = [f"kind_{i}" for i in range(len(where.kinds))]
        clauses.append(f"kind IN ({', '.join(':' + n for n in names)})")
        params.update(zip(names, sorted(where.kinds), strict=True))
    # Within one scope, ordering by version is ordering by seq. An index on (scope_id, x)
    # holds the rowid, seq, after x.
    order = "DESC" if where.descending else "ASC"
    ordering = f"seq {order}" if where.key is not None else f"version {order}"
    sql = f"SELECT {EVENT_COLUMNS} FROM events WHERE {' AND '.join(clauses)} ORDER BY {ordering}"
    if where.limit is not None:
        sql += " LIMIT :limit"
        params["limit"] = where.limit
    return sql, params


class SQLiteReads(LogBackend):
    """The read side of `SQLiteBackend`, which opens and closes the connections."""

    path: str
    _point_conn: sqlite3.Connection | None
    _value_cursor: sqlite3.Cursor | None  # select_value's, on the point-read connection
    _read_conn: aiosqlite.Connection | None
    _errors: Translating

    @property
    def in_memory(self) -> bool:
        return self.path == ":memory:"

    def _reader(self) -> aiosqlite.Connection:
        if self._read_conn is None:
            raise StoreClosedError("SQLite log")
        return self._read_conn

    def _points(self) -> sqlite3.Connection:
        if self._point_conn is None:
            raise StoreClosedError("SQLite log")
        return self._point_conn

    async def select_scopes(self, where: shape.ScopeFilter | None = None) -> list[ScopeRow]:
        with self._errors:
            if where is None:
                rows = await self._reader().execute_fetchall(_SELECT_ALL_SCOPES)
                return [ScopeRow(*r) for r in rows]
            if where.scope_key is not None:
                row = self._points().execute(_SELECT_SCOPE, (where.scope_key,)).fetchone()
                found = None if row is None else ScopeRow(*row)
                return [found][: where.limit] if found and where.matches(found) else []
            before_at, before_id = where.before if where.before is not None else (None, None)
            params = {
                "kind": where.kind,
                "dag_id": where.dag_id,
                "run_id": where.run_id,
                "task_id": where.task_id,
                "since": where.since,
                "until": where.until,
                "before_at": before_at,
                "before_id": before_id,
                "limit": -1 if where.limit is None else where.limit,
            }
            rows = await self._reader().execute_fetchall(_SELECT_SCOPES_PAGE, params)
            return [ScopeRow(*r) for r in rows]

    async def select_current(
        self, scope_id: int | None = None, where: shape.CurrentFilter = shape.EVERY_ROW
    ) -> list[CurrentRow]:
        with self._errors:
            if scope_id is None:
                rows = await self._reader().execute_fetchall(_SELECT_ALL_CURRENT)
                found = [CurrentRow(*r) for r in rows]
                return [r for r in found if where.matches(r)][: where.limit]
            points = self._points()
            if where.key is not None:
                row = points.execute(_SELECT_CURRENT, (scope_id, where.key)).fetchone()
                return [] if row is None else where.keep([CurrentRow(*row)])
            if where == shape.EVERY_ROW:
                return [CurrentRow(*r) for r in points.execute(_SELECT_CURRENT_ALL, (scope_id,))]
            now = _NO_NOW if where.now is None else where.now
            limit = -1 if where.limit is None else where.limit
            page = (scope_id, where.after_key or "", now, limit)
            return [CurrentRow(*r) for r in points.execute(_SELECT_CURRENT_PAGE, page)]

    async def select_value(self, scope_id: int, key: str, now: int) -> bytes | None:
        # The hot path of every get: a cursor kept for it, no context manager, one column.
        cursor = self._value_cursor
        if cursor is None:
            cursor = self._value_cursor = self._points().cursor()
        try:
            row = cursor.execute(_SELECT_VALUE, (scope_id, key, now)).fetchone()
        except sqlite3.Error as error:
            raise translate(error, self.path) from error
        return None if row is None else row[0]

    async def select_events(self, scope_id: int, where: EventFilter) -> list[EventRow]:
        with self._errors:
            sql, params = _events_query(scope_id, where)
            rows = await self._reader().execute_fetchall(sql, params)
            return [EventRow(*r) for r in rows]

    async def select_markers(
        self, scope_ids: Collection[int], kinds: Collection[str], *, through_seq: int | None = None
    ) -> dict[tuple[int, str], EventRow]:
        if not scope_ids or not kinds:
            return {}
        params = {
            "scopes": _encode_json(sorted(scope_ids)).decode(),
            "kinds": _encode_json(sorted(kinds)).decode(),
            "through": _NO_BOUND if through_seq is None else through_seq,
        }
        with self._errors:
            rows = await self._reader().execute_fetchall(_SELECT_MARKERS, params)
        return {(r.scope_id, r.kind): r for r in (EventRow(*row) for row in rows)}

    async def select_latest_per_key(
        self, scope_id: int, *, after_seq: int, through_seq: int
    ) -> list[EventRow]:
        with self._errors:
            rows = await self._reader().execute_fetchall(
                _SELECT_LATEST_PER_KEY,
                {"scope": scope_id, "after": after_seq, "through": through_seq},
            )
            return [EventRow(*r) for r in rows]

    async def select_all_events(
        self, *, after_seq: int = 0, batch: int = 1000
    ) -> AsyncIterator[EventRow]:
        reader = self._reader()
        while True:
            with self._errors:
                rows = list(await reader.execute_fetchall(_SELECT_ALL_EVENTS, (after_seq, batch)))
            for r in rows:
                yield EventRow(*r)
            if len(rows) < batch:
                return
            after_seq = rows[-1][0]

    async def select_head(self) -> LogHead:
        with self._errors:
            rows = await self._reader().execute_fetchall(_SELECT_HEAD)
            return LogHead(*next(iter(rows)))

    async def select_storage(self, *, idempotent_before: int | None = None) -> shape.Storage:
        with self._errors:
            if self.in_memory:
                total = int(self._points().execute(SELECT_PAGE_BYTES).fetchone()[0])
            else:
                total = 0
                for suffix in ("", "-wal"):
                    path = anyio.Path(self.path + suffix)
                    if await path.exists():
                        total += (await path.stat()).st_size
            if idempotent_before is None:
                return shape.Storage(total)
            params = (idempotent_before,)
            rows = await self._reader().execute_fetchall(_COUNT_IDEMPOTENT, params)
            return shape.Storage(total, int(next(iter(rows))[0]))
