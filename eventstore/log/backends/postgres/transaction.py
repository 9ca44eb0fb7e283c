"""The write transaction: one writer at a time on the database, positions in commit order.

A batch that writes to scopes the log knows costs four round trips whatever its size: BEGIN with
the lock, the heads it plans from, one statement that applies every write as arrays (`unnest`),
COMMIT. Idempotency ids add one (all of the batch's at once), a new scope one each.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from contextlib import suppress
from typing import Any, Final

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from msgspec import Struct
from msgspec.structs import astuple, replace

from eventstore.log.backends import rows as shape
from eventstore.log.backends.base import WriteTransaction
from eventstore.log.backends.postgres.driver import (
    CURRENT_COLUMNS,
    DRIVER_ERRORS,
    EVENT_COLUMNS,
    IDEMPOTENT_COLUMNS,
    SCOPE_COLUMNS,
    encode,
    scope_row,
)
from eventstore.log.backends.rows import CurrentRow, EventRow, Ids, Keys, KeysAt, LogHead, ScopeRow

__all__ = ["BEGIN_AND_LOCK", "COMMIT", "PostgresTransaction", "rollback"]

# Global positions in commit order. The log planner hands out `seq` from the log_head row it
# reads inside the write transaction, so every write transaction starts by locking that row,
# before anything else is read: every writer of every process and replica on this database
# queues on it, and the next one can only read the head once the previous one has committed. At
# READ COMMITTED (asked for explicitly, whatever the server's default) each statement after the
# lock sees everything committed before it: the head the previous writer left, its scope heads,
# its idempotency ids. So positions are handed out in exactly the order the transactions commit:
# when a reader can see position p, every position below p is committed and visible too, and a
# reader tailing the log from p never skips an event that commits later. A sequence or identity
# column would not do: its values are taken before commit, so a transaction holding position 5
# could commit after one holding 6, and a tailer that saw 6 would move past 5 for good.
# The lock is also what makes version checks, fencing and idempotency hold across processes: the
# planner reads scope heads after taking it, so no other writer can change them before commit.
# BEGIN and the lock travel in one simple-protocol message: one round trip.
BEGIN_AND_LOCK: Final = (
    "BEGIN ISOLATION LEVEL READ COMMITTED; SELECT 1 FROM log_head WHERE id = 1 FOR UPDATE"
)
COMMIT: Final = "COMMIT"
_ROLLBACK: Final = "ROLLBACK"
_SELECT_HEAD: Final = "SELECT last_seq, last_recorded_at FROM log_head WHERE id = 1"

# The head and the scopes a batch addresses, in one round trip (the head repeats on every row),
# with the value heads (`select_current_heads`) of each scope's first `_HEADS_READ` keys. Each
# write that does not say `sensitive` keeps its key's stored flag, so planning asks for the heads
# of the keys it sets, a round trip per scope; most scopes hold a handful of keys, and for those
# the answer is then already here. A scope with more keys (`_HEADS_READ` + 1 come back) is asked
# when planning needs it, as before.
_HEADS_READ: Final = 16
_SELECT_HEAD_AND_SCOPES: Final = (
    "SELECT h.last_seq, h.last_recorded_at, "
    + ", ".join(f"s.{column}" for column in ScopeRow.__struct_fields__)
    + ", c.keys, c.heads "
    "FROM log_head AS h LEFT JOIN scopes AS s ON s.scope_key = ANY($1::text[]) "
    "LEFT JOIN LATERAL (SELECT array_agg(f.key) AS keys, array_agg(f.head) AS heads FROM ("
    "SELECT key, substring(value FROM 1 FOR 2) AS head FROM current "
    "WHERE scope_id = s.scope_id ORDER BY key LIMIT $2) AS f) AS c ON true WHERE h.id = 1"
)

# A batch's writes to the log, the projection's upserts, the scope heads, the idempotency table
# and the head travel as arrays in this one statement (one round trip): each data-modifying WITH
# runs exactly once, and they touch different tables, so their order does not matter.
_APPLY: Final = (
    f"WITH new_events AS (INSERT INTO events ({EVENT_COLUMNS}) SELECT * FROM unnest("
    "$1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::bytea[], $6::bigint[], "
    "$7::bigint[], $8::bigint[], $9::text[], $10::bytea[])), "
    f"new_current AS (INSERT INTO current ({CURRENT_COLUMNS}) SELECT * FROM unnest("
    "$11::bigint[], $12::bytea[], $13::bytea[], $14::bigint[], $15::bigint[], $16::bigint[], "
    "$17::bigint[]) "
    "ON CONFLICT (scope_id, key) DO UPDATE SET value = excluded.value, "
    "expires_at = excluded.expires_at, version = excluded.version, seq = excluded.seq, "
    "updated_at = excluded.updated_at), "
    "scope_heads AS (UPDATE scopes AS s SET version = u.version, max_try = u.max_try, "
    "updated_at = u.updated_at "
    "FROM unnest($18::bigint[], $19::bigint[], $20::bigint[], $21::bigint[]) "
    "AS u (scope_id, version, max_try, updated_at) WHERE s.scope_id = u.scope_id), "
    f"new_idempotent AS (INSERT INTO idempotency ({IDEMPOTENT_COLUMNS}) SELECT * FROM "
    "unnest($22::bigint[], $23::bytea[], $24::bytea[], $25::bigint[])) "
    "UPDATE log_head SET last_seq = $26, last_recorded_at = $27 WHERE id = 1 AND $28::boolean"
)
_DELETE_CURRENT: Final = (
    "DELETE FROM current AS c USING unnest($1::bigint[], $2::bytea[]) AS d (scope_id, key) "
    "WHERE c.scope_id = d.scope_id AND c.key = d.key"
)
_CLEAR_CURRENT: Final = "DELETE FROM current WHERE scope_id = ANY($1::bigint[])"

# Compaction: events by position, and projection rows only while they still come from the event
# compaction removes (a concurrent write may have replaced one).
_DELETE_EVENTS: Final = "DELETE FROM events WHERE seq = ANY($1::bigint[])"

# Old idempotency results, a few hundred at a time (each batch its own short transaction).
_DELETE_IDEMPOTENT: Final = (
    "DELETE FROM idempotency WHERE ctid = ANY(ARRAY("
    "SELECT ctid FROM idempotency WHERE recorded_at < $1 LIMIT $2))"
)
_DELETE_CURRENT_AT: Final = (
    "DELETE FROM current AS c "
    "USING unnest($1::bigint[], $2::bytea[], $3::bigint[]) AS d (scope_id, key, seq) "
    "WHERE c.scope_id = d.scope_id AND c.key = d.key AND c.seq = d.seq"
)
_DELETE_ALL_CURRENT: Final = "DELETE FROM current"
_UPDATE_PAYLOADS: Final = (
    "UPDATE events AS e SET payload = u.payload "
    "FROM unnest($1::bigint[], $2::bytea[]) AS u (seq, payload) WHERE e.seq = u.seq"
)
_UPDATE_CURRENT_VALUES: Final = (
    "UPDATE current AS c SET value = u.value "
    "FROM unnest($1::bytea[], $2::bigint[], $3::bytea[], $4::bigint[]) "
    "AS u (value, scope_id, key, seq) "
    "WHERE c.scope_id = u.scope_id AND c.key = u.key AND c.seq = u.seq"
)

# Every (scope_id, id) pair of a batch in one statement: two parallel arrays, unnested.
_SELECT_IDEMPOTENT: Final = (
    "SELECT i.scope_id, i.idempotency_id, i.result FROM idempotency AS i "
    "JOIN unnest($1::bigint[], $2::bytea[]) AS w (scope_id, idempotency_id) "
    "ON i.scope_id = w.scope_id AND i.idempotency_id = w.idempotency_id"
)
# Every column but the identity, which the server hands out.
_INSERT_SCOPE: Final = (
    f"INSERT INTO scopes ({', '.join(ScopeRow.__struct_fields__[1:])}) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING scope_id"
)
_SELECT_SCOPES: Final = f"SELECT {SCOPE_COLUMNS} FROM scopes WHERE scope_key = ANY($1::text[])"
_SELECT_TASK_SCOPES: Final = (
    f"SELECT {SCOPE_COLUMNS} FROM scopes WHERE dag_id = $1 AND run_id = $2 AND task_id = $3"
)

# The flags of stored values (eventstore.log.envelope) are in their first two bytes.
# The value heads of (scope_id, key) pairs of any scopes, in one statement.
_SELECT_CURRENT_HEADS: Final = (
    "SELECT c.scope_id, c.key, substring(c.value FROM 1 FOR 2) FROM current AS c "
    "JOIN unnest($1::bigint[], $2::bytea[]) AS w (scope_id, key) "
    "ON c.scope_id = w.scope_id AND c.key = w.key"
)
_SELECT_LIVE_HEADS: Final = (
    "SELECT key, substring(value FROM 1 FOR 2) FROM current "
    "WHERE scope_id = $1 AND (expires_at IS NULL OR expires_at > $2)"
)


class PostgresTransaction(WriteTransaction):
    """The write primitives; writes are kept until a read or the commit needs them applied.

    Kept writes go out in one `_APPLY` statement. Deletes from the projection apply what is kept
    first and then run at once, so every write lands in the order the log asked for it.
    """

    def __init__(self, conn: PoolConnectionProxy[asyncpg.Record]) -> None:
        self.conn = conn
        self.head: LogHead | None = None  # read under the lock, so it cannot change before commit
        self._events: list[EventRow] = []
        self._current: dict[tuple[int, str], CurrentRow] = {}
        self._scopes: dict[int, ScopeRow] = {}
        self._idempotent: list[shape.IdempotentRow] = []
        self._new_head: LogHead | None = None
        # Every value head of the scopes read whole by `select_head_and_scopes`, by scope_id;
        # dropped at the first write to the projection, after which the table answers.
        self._heads: dict[int, dict[str, bytes]] = {}

    async def flush(self) -> None:
        """Apply every kept write, in one statement."""
        if not (
            self._events
            or self._current
            or self._scopes
            or self._idempotent
            or self._new_head is not None
        ):
            return
        events, current = self._events, list(self._current.values())
        scopes, idempotent = list(self._scopes.values()), self._idempotent
        head = self._new_head or self.head or LogHead()
        scope_heads = _columns(scopes, ScopeRow)
        await self.conn.execute(
            _APPLY,
            *_columns(events, EventRow, text="key"),
            *_columns(current, CurrentRow, text="key"),
            *(scope_heads[i] for i in _SCOPE_HEAD_COLUMNS),
            *_columns(idempotent, shape.IdempotentRow, text="idempotency_id"),
            head.last_seq,
            head.last_recorded_at,
            self._new_head is not None,
        )
        self._events, self._current, self._scopes, self._idempotent = [], {}, {}, []
        if self._new_head is not None:
            self.head, self._new_head = self._new_head, None

    async def _select_head(self) -> LogHead:
        head = self._new_head or self.head
        if head is None:
            row = await self.conn.fetchrow(_SELECT_HEAD)
            assert row is not None, "log_head has its one row from the first migration"
            head = self.head = LogHead(last_seq=row[0], last_recorded_at=row[1])
        return LogHead(last_seq=head.last_seq, last_recorded_at=head.last_recorded_at)

    async def select_head_and_scopes(
        self, scope_keys: Collection[str] = (), *, task: shape.Task | None = None
    ) -> tuple[LogHead, dict[str, ScopeRow]]:
        if task is not None or self.head is not None or self._new_head is not None:
            await self.flush()
            rows = await self.conn.fetch(_SELECT_SCOPES, list(scope_keys)) if scope_keys else []
            if task is not None:
                parts = [part.encode() for part in task]
                rows = [*rows, *await self.conn.fetch(_SELECT_TASK_SCOPES, *parts)]
            return await self._select_head(), {r[1]: scope_row(r) for r in rows}
        rows = await self.conn.fetch(_SELECT_HEAD_AND_SCOPES, list(scope_keys), _HEADS_READ + 1)
        self.head = LogHead(last_seq=rows[0][0], last_recorded_at=rows[0][1])
        scopes = {r[3]: scope_row(r[2:]) for r in rows if r[2] is not None}
        for r in rows:
            keys = r[11] or ()
            if r[2] is not None and len(keys) <= _HEADS_READ:
                self._heads[r[2]] = dict(zip((k.decode() for k in keys), r[12] or (), strict=True))
        return await self._select_head(), scopes

    async def select_current_heads(
        self, pairs: shape.Pairs = (), *, scope_id: int | None = None, now: int = 0
    ) -> dict[tuple[int, str], bytes]:
        """The heads of a batch's keys: of small scopes from its first read, the rest in one
        statement."""
        found: dict[tuple[int, str], bytes] = {}
        asked: list[tuple[int, str]] = []
        for pair_scope, key in pairs:
            known = self._heads.get(pair_scope)
            if known is None:
                asked.append((pair_scope, key))
            elif key in known:
                found[(pair_scope, key)] = known[key]
        if asked or scope_id is not None:
            await self.flush()
        if asked:
            rows = await self.conn.fetch(
                _SELECT_CURRENT_HEADS, [p[0] for p in asked], [p[1].encode() for p in asked]
            )
            found.update(((r[0], r[1].decode()), r[2]) for r in rows)
        if scope_id is not None:
            rows = await self.conn.fetch(_SELECT_LIVE_HEADS, scope_id, now)
            found.update(((scope_id, r[0].decode()), r[1]) for r in rows)
        return found

    async def select_idempotent(self, pairs: shape.Pairs) -> dict[tuple[int, str], bytes]:
        if not pairs:
            return {}
        await self.flush()
        rows = await self.conn.fetch(
            _SELECT_IDEMPOTENT, [k[0] for k in pairs], [k[1].encode() for k in pairs]
        )
        return {(r[0], r[1].decode()): r[2] for r in rows}

    async def insert(self, batch: shape.Insert) -> list[int]:
        ids: list[int] = []
        old: list[ScopeRow] = []
        for row in batch.scopes:
            if row.scope_id:
                old.append(row)
            else:
                ids.append(await self._insert_scope(row))
        if batch.events:
            await self._insert_events(batch.events)
        if batch.current:
            await self._upsert_current(batch.current)
        if old:
            self._update_scopes(old)
        self._idempotent.extend(batch.idempotent)
        if batch.head is not None:
            self._new_head = replace(batch.head)
        return ids

    async def _insert_scope(self, row: ScopeRow) -> int:
        scope_id: int = await self.conn.fetchval(
            _INSERT_SCOPE,
            row.scope_key,
            row.version,
            row.max_try,
            row.updated_at,
            encode(row.dag_id),
            encode(row.run_id),
            encode(row.task_id),
            row.map_index,
        )
        return scope_id

    async def _insert_events(self, rows: Sequence[EventRow]) -> None:
        self._events.extend(rows)

    async def _upsert_current(self, rows: Sequence[CurrentRow]) -> None:
        self._heads.clear()
        for row in rows:
            self._current[(row.scope_id, row.key)] = row

    async def delete_current(
        self, keys: Keys = (), *, keys_at: KeysAt = (), scope_ids: Ids = (), every: bool = False
    ) -> None:
        self._heads.clear()
        if not (every or scope_ids or keys or keys_at):
            return
        await self.flush()
        if every:
            await self.conn.execute(_DELETE_ALL_CURRENT)
        if scope_ids:
            await self.conn.execute(_CLEAR_CURRENT, list(scope_ids))
        if keys:
            await self.conn.execute(
                _DELETE_CURRENT, [p[0] for p in keys], [p[1].encode() for p in keys]
            )
        if keys_at:
            await self.conn.execute(
                _DELETE_CURRENT_AT,
                [r[0] for r in keys_at],
                [r[1].encode() for r in keys_at],
                [r[2] for r in keys_at],
            )

    def _update_scopes(self, rows: Sequence[ScopeRow]) -> None:
        for row in rows:
            self._scopes[row.scope_id] = ScopeRow(
                scope_id=row.scope_id,
                scope_key=row.scope_key,
                version=row.version,
                max_try=row.max_try,
                updated_at=row.updated_at,
            )

    async def delete_idempotent(self, *, recorded_before: int, limit: int) -> int:
        await self.flush()
        status = await self.conn.execute(_DELETE_IDEMPOTENT, recorded_before, limit)
        return int(status.split()[-1])  # "DELETE <count>"

    async def delete_events(self, seqs: Sequence[int]) -> int:
        await self.flush()
        status = await self.conn.execute(_DELETE_EVENTS, list(seqs))
        return int(status.split()[-1])  # "DELETE <count>"

    async def update_stored(
        self, *, payloads: shape.Payloads = (), values: shape.Values = ()
    ) -> None:
        if values:
            self._heads.clear()
        if not (payloads or values):
            return
        await self.flush()
        if payloads:
            await self.conn.execute(
                _UPDATE_PAYLOADS, [r[0] for r in payloads], [r[1] for r in payloads]
            )
        if values:
            await self.conn.execute(
                _UPDATE_CURRENT_VALUES,
                [r[0] for r in values],
                [r[1] for r in values],
                [r[2].encode() for r in values],
                [r[3] for r in values],
            )


async def rollback(conn: PoolConnectionProxy[asyncpg.Record]) -> None:
    # If the connection is gone, the server rolls the transaction back itself.
    with suppress(*DRIVER_ERRORS):
        if conn.is_in_transaction():
            await conn.execute(_ROLLBACK)


# The columns of `scopes` a batch updates: the scope head, by position in ScopeRow.
_SCOPE_HEAD_COLUMNS: Final = tuple(
    ScopeRow.__struct_fields__.index(name)
    for name in ("scope_id", "version", "max_try", "updated_at")
)


def _columns(
    rows: Sequence[Struct], kind: type[Struct], text: str | None = None
) -> list[list[Any]]:
    """The rows as one list per field, in field order (each goes to the server as an array);
    the field `text` as UTF-8 bytes."""
    fields = kind.__struct_fields__
    if not rows:
        return [[] for _ in fields]
    columns = [list(column) for column in zip(*map(astuple, rows), strict=True)]
    if text is not None:
        at = fields.index(text)
        columns[at] = [encode(value) for value in columns[at]]
    return columns
