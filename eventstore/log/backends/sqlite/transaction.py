"""The statements of one SQLite write transaction (the primitives `append_batch` composes).

They run on the event loop thread, on the write connection: each touches only SQLite's page cache
and takes microseconds, less than a hop to a worker thread would. Statements over many rows (the
slices of a big batch, compaction's deletes) run in the worker thread instead, where the page
cache spilling to the WAL file does not stop the loop.

What the transaction reads and writes of the heads (the log head, scope rows, value heads, try
starts) goes into the writer's heads (`kept_heads.WriterHeads`), which the backend keeps while no
other connection commits to the file: a lone writer's batch then reads none of them again, and
writes only its rows.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any, Final

import msgspec
from msgspec.structs import astuple, replace

from eventstore.log.backends import rows as shape
from eventstore.log.backends.base import WriteTransaction
from eventstore.log.backends.kept_heads import VALUE_HEADS_KEPT, WriterHeads
from eventstore.log.backends.rows import CurrentRow, EventRow, Ids, Keys, KeysAt, LogHead, ScopeRow
from eventstore.log.backends.sqlite.schema import (
    CURRENT_COLUMNS,
    EVENT_COLUMNS,
    IDEMPOTENT_COLUMNS,
    SCOPE_COLUMNS,
)

__all__ = ["SQLiteTransaction"]

# Statements over more rows than this (the slices of a big batch) run in the worker thread. A
# usual batch (up to StoreConfig.max_batch, 256) stays on the loop: for it the hop to the thread
# and back cost more than the statement.
_INLINE_ROWS: Final = 256

_encode_json = msgspec.json.Encoder().encode

_INSERT_EVENT: Final = f"INSERT INTO events ({EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"

_UPSERT_CURRENT: Final = (
    f"INSERT INTO current ({CURRENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (scope_id, key) DO UPDATE SET value = excluded.value, "
    "expires_at = excluded.expires_at, version = excluded.version, seq = excluded.seq, "
    "updated_at = excluded.updated_at"
)

# One statement for a whole batch of keys: the keys travel as one JSON array parameter.
_SELECT_SCOPES: Final = (
    f"SELECT {SCOPE_COLUMNS} FROM scopes WHERE scope_key IN (SELECT value FROM json_each(?))"
)

_SELECT_SCOPE: Final = f"SELECT {SCOPE_COLUMNS} FROM scopes WHERE scope_key = ?"

_SELECT_TASK_SCOPES: Final = (
    f"SELECT {SCOPE_COLUMNS} FROM scopes WHERE dag_id = ? AND run_id = ? AND task_id = ?"
)

_SELECT_HEAD: Final = "SELECT last_seq, last_recorded_at FROM log_head"
_UPDATE_HEAD: Final = "UPDATE log_head SET last_seq = ?, last_recorded_at = ?"

_SELECT_LIVE_HEADS: Final = (
    "SELECT key, substr(value, 1, 2) FROM current "
    "WHERE scope_id = ? AND (expires_at IS NULL OR expires_at > ?)"
)

# The flags of stored values (eventstore.log.envelope) are in their first two bytes.
_SELECT_CURRENT_HEAD: Final = (
    "SELECT substr(value, 1, 2) FROM current WHERE scope_id = ? AND key = ?"
)

# The pairs travel as one JSON array of [scope_id, key]; each is one seek of the primary key.
_SELECT_CURRENT_HEADS_OF: Final = (
    "SELECT c.scope_id, c.key, substr(c.value, 1, 2) FROM json_each(?) AS w "
    "JOIN current AS c ON c.scope_id = json_extract(w.value, '$[0]') "
    "AND c.key = json_extract(w.value, '$[1]')"
)

# Every value head of a scope of a few keys, to keep (one more comes back from a bigger scope).
_SELECT_SCOPE_HEADS: Final = (
    f"SELECT key, substr(value, 1, 2) FROM current WHERE scope_id = ? LIMIT {VALUE_HEADS_KEPT + 1}"
)

# The same for many scopes at once, as one JSON array of ids: each scope of a few keys comes back
# with every key (a row with a NULL key if it has none), a bigger one not at all. Its keys are
# counted with a seek and at most VALUE_HEADS_KEPT + 1 steps of the primary key.
_SELECT_SMALL_SCOPES_HEADS: Final = (
    "SELECT w.value, c.key, substr(c.value, 1, 2) FROM json_each(?) AS w "
    "LEFT JOIN current AS c ON c.scope_id = w.value "
    "WHERE (SELECT count(*) FROM (SELECT 1 FROM current WHERE scope_id = w.value "
    f"LIMIT {VALUE_HEADS_KEPT + 1})) <= {VALUE_HEADS_KEPT}"
)

_INSERT_TRY: Final = (
    "INSERT OR IGNORE INTO tries (scope_id, try_number, first_version) VALUES (?, ?, ?)"
)

# Every column but the scope_id, which SQLite hands out.
_INSERT_SCOPE: Final = (
    f"INSERT INTO scopes ({', '.join(ScopeRow.__struct_fields__[1:])}) "
    f"VALUES ({', '.join('?' for _ in ScopeRow.__struct_fields__[1:])}) RETURNING scope_id"
)

_UPDATE_SCOPE: Final = (
    "UPDATE scopes SET version = ?, max_try = ?, updated_at = ? WHERE scope_id = ?"
)

# The pairs travel as one JSON array of [scope_id, id]; each is one seek of the primary key.
_SELECT_IDEMPOTENT: Final = (
    "SELECT i.scope_id, i.idempotency_id, i.result FROM json_each(?) AS w "
    "JOIN idempotency AS i ON i.scope_id = json_extract(w.value, '$[0]') "
    "AND i.idempotency_id = json_extract(w.value, '$[1]')"
)

_INSERT_IDEMPOTENT: Final = f"INSERT INTO idempotency ({IDEMPOTENT_COLUMNS}) VALUES (?, ?, ?, ?)"

# Compaction forgets old results a few hundred at a time, each batch its own short transaction.
_DELETE_IDEMPOTENT: Final = (
    "DELETE FROM idempotency WHERE (idempotency_id, scope_id) IN ("
    "SELECT idempotency_id, scope_id FROM idempotency WHERE recorded_at < ? LIMIT ?)"
)

_UPDATE_CURRENT_VALUE: Final = (
    "UPDATE current SET value = ? WHERE scope_id = ? AND key = ? AND seq = ?"
)


class SQLiteTransaction(WriteTransaction):
    """The statements of one write transaction, run on the loop thread (see the module doc).

    `kept` is what the writer knows of the heads as its last committed transaction left them
    (the backend hands out an empty one when it cannot trust that); reads answer from it where
    it knows, and every write the transaction makes goes into it too. If the transaction does not
    commit, the backend forgets it.
    """

    __slots__ = ("conn", "in_thread", "kept", "rows")

    def __init__(
        self,
        conn: sqlite3.Connection,
        in_thread: Callable[..., Awaitable[Any]],
        kept: WriterHeads | None = None,
    ) -> None:
        self.conn = conn
        self.in_thread = in_thread
        self.kept = WriterHeads() if kept is None else kept
        self.rows = 0  # rows written or removed, for the choice of where to commit

    async def _many(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        """executemany: on the loop thread for the few rows of a usual batch; the slices of a
        big one in the worker thread, where the page cache spilling to the WAL (file I/O) does
        not stop the loop."""
        if len(rows) <= _INLINE_ROWS:
            self.conn.executemany(sql, rows)
        else:
            await self.in_thread(self.conn.executemany, sql, rows)

    async def _fetch(self, sql: str, params: Sequence[object], items: int) -> list[Any]:
        """fetchall of a statement over `items` of a JSON array: in the worker thread when many."""
        if items <= _INLINE_ROWS:
            return self.conn.execute(sql, params).fetchall()
        rows: list[Any] = await self.in_thread(lambda: self.conn.execute(sql, params).fetchall())
        return rows

    async def select_head_and_scopes(
        self, scope_keys: Collection[str] = (), *, task: shape.Task | None = None
    ) -> tuple[LogHead, dict[str, ScopeRow]]:
        kept = self.kept
        head = kept.head
        if head is None:
            head = kept.head = LogHead(*self.conn.execute(_SELECT_HEAD).fetchone())
        found, missing = kept.split(scope_keys)
        if missing:
            if len(missing) == 1:  # one scope: a plain seek, no JSON array
                rows = self.conn.execute(_SELECT_SCOPE, (missing[0],)).fetchall()
            else:
                rows = self.conn.execute(_SELECT_SCOPES, (_json_array(missing),)).fetchall()
            for r in rows:
                row = found[r[1]] = ScopeRow(*r)
                kept.keep_scope(row)
            for key in missing:
                if key not in found:
                    kept.keep_absent(key)
        if task is not None:
            for r in self.conn.execute(_SELECT_TASK_SCOPES, task):
                row = found[r[1]] = ScopeRow(*r)
                kept.keep_scope(row)
        return LogHead(head.last_seq, head.last_recorded_at), found

    async def select_current_heads(
        self, pairs: shape.Pairs = (), *, scope_id: int | None = None, now: int = 0
    ) -> dict[tuple[int, str], bytes]:
        """The heads of these keys: from what is kept, for scopes of a few keys (read whole the
        first time, and kept); the keys of bigger scopes in one statement; with `scope_id`, that
        scope's live keys in one more."""
        found: dict[tuple[int, str], bytes] = {}
        if scope_id is not None:
            live = self.conn.execute(_SELECT_LIVE_HEADS, (scope_id, now))
            found.update(((scope_id, r[0]), r[1]) for r in live)
        values, many = self.kept.values, self.kept.many
        unknown = list({p[0]: None for p in pairs if p[0] not in values and p[0] not in many})
        if unknown:
            await self._keep_small_scopes(unknown)
        asked: list[tuple[int, str]] = []
        for pair in pairs:
            known = values.get(pair[0])
            if known is None:
                asked.append(pair)
            elif pair[1] in known:
                found[pair] = known[pair[1]]
        if len(asked) == 1:  # one write: a plain seek, no JSON array
            [(pair_scope, key)] = asked
            row = self.conn.execute(_SELECT_CURRENT_HEAD, (pair_scope, key)).fetchone()
            if row is not None:
                found[(pair_scope, key)] = row[0]
        elif asked:
            params = (_encode_json(asked).decode(),)
            rows = await self._fetch(_SELECT_CURRENT_HEADS_OF, params, len(asked))
            found.update(((r[0], r[1]), r[2]) for r in rows)
        return found

    async def _keep_small_scopes(self, scope_ids: list[int]) -> None:
        """Read every value head of those of these scopes that hold a few keys, and keep them:
        the next batches ask for no flags of those scopes."""
        kept = self.kept
        if len(scope_ids) == 1:
            [scope_id] = scope_ids
            kept.keep_values(scope_id, dict(self.conn.execute(_SELECT_SCOPE_HEADS, (scope_id,))))
            return
        params = (_encode_json(scope_ids).decode(),)
        heads: dict[int, dict[str, bytes]] = {}
        for scope_id, key, head in await self._fetch(
            _SELECT_SMALL_SCOPES_HEADS, params, len(scope_ids)
        ):
            of_scope = heads.setdefault(scope_id, {})
            if key is not None:
                of_scope[key] = head
        for scope_id in scope_ids:
            if scope_id in heads:
                kept.keep_values(scope_id, heads[scope_id])
            else:  # not among the small scopes
                kept.keep_many(scope_id)

    async def select_idempotent(self, pairs: shape.Pairs) -> dict[tuple[int, str], bytes]:
        if not pairs:
            return {}
        rows = self.conn.execute(_SELECT_IDEMPOTENT, (_encode_json(list(pairs)).decode(),))
        return {(r[0], r[1]): r[2] for r in rows}

    async def insert(self, batch: shape.Insert) -> list[int]:
        kept = self.kept
        ids: list[int] = []
        heads: list[tuple[int, int | None, int, int]] = []
        for row in batch.scopes:
            if row.scope_id:  # the head only: a scope keeps its parts
                heads.append((row.version, row.max_try, row.updated_at, row.scope_id))
            else:
                scope_id = self.conn.execute(_INSERT_SCOPE, astuple(row)[1:]).fetchone()[0]
                ids.append(scope_id)
                kept.keep_scope(replace(row, scope_id=scope_id))
                kept.values[scope_id] = {}  # a new scope holds no key yet
        if heads:
            self.conn.executemany(_UPDATE_SCOPE, heads)
            for row in batch.scopes:
                if row.scope_id:
                    kept.keep_scope(row)
        if batch.events:
            await self._insert_events(batch.events)
        if batch.current:
            await self._upsert_current(batch.current)
        if batch.idempotent:
            self.conn.executemany(_INSERT_IDEMPOTENT, map(astuple, batch.idempotent))
        if batch.head is not None:
            self.conn.execute(_UPDATE_HEAD, (batch.head.last_seq, batch.head.last_recorded_at))
            kept.head = LogHead(batch.head.last_seq, batch.head.last_recorded_at)
        return ids

    async def _insert_events(self, rows: Sequence[EventRow]) -> None:
        self.rows += len(rows)
        await self._many(_INSERT_EVENT, [astuple(r) for r in rows])
        # Where each try starts, kept once per try (see MIGRATIONS, step 5): the first of a
        # batch's events of a try it may start; a try already started keeps its row, and one
        # this writer knows is recorded is not asked for again.
        starts: dict[tuple[int, int], int] = {}
        for r in rows:
            if r.try_number is not None:
                starts.setdefault((r.scope_id, r.try_number), r.version)
        starts = self.kept.new_tries(starts)
        if starts:
            self.conn.executemany(_INSERT_TRY, [(*k, v) for k, v in starts.items()])
            self.kept.record_tries(starts)

    async def _upsert_current(self, rows: Sequence[CurrentRow]) -> None:
        self.rows += len(rows)
        await self._many(_UPSERT_CURRENT, [astuple(r) for r in rows])
        kept = self.kept
        for r in rows:
            kept.set_value(r.scope_id, r.key, r.value[:2])

    async def delete_current(
        self, keys: Keys = (), *, keys_at: KeysAt = (), scope_ids: Ids = (), every: bool = False
    ) -> None:
        if every:
            self.conn.execute("DELETE FROM current")
        if scope_ids:
            self.conn.executemany(
                "DELETE FROM current WHERE scope_id = ?", [(s,) for s in scope_ids]
            )
        if keys:
            await self._many("DELETE FROM current WHERE scope_id = ? AND key = ?", keys)
        if keys_at:
            # Compaction's slices are big: counted as rows so they leave the loop thread.
            self.rows += len(keys_at)
            await self._many(
                "DELETE FROM current WHERE scope_id = ? AND key = ? AND seq = ?", keys_at
            )
        self.kept.deleted_current(keys, keys_at=keys_at, scope_ids=scope_ids, every=every)

    async def delete_idempotent(self, *, recorded_before: int, limit: int) -> int:
        return self.conn.execute(_DELETE_IDEMPOTENT, (recorded_before, limit)).rowcount

    # Compaction's and erasure's statements go through _many and count as rows too: their
    # slices are big, and run on the loop thread they kept it (and every writer) waiting.
    # Removing events changes no head: a scope's version, its tries and the log head stay.
    async def delete_events(self, seqs: Sequence[int]) -> int:
        self.rows += len(seqs)
        before = self.conn.total_changes
        await self._many("DELETE FROM events WHERE seq = ?", [(s,) for s in seqs])
        return self.conn.total_changes - before

    async def update_stored(
        self, *, payloads: shape.Payloads = (), values: shape.Values = ()
    ) -> None:
        # The bytes replaced (a plain value) are overwritten: see secure_delete in _connect.
        self.rows += len(payloads) + len(values)
        await self._many(
            "UPDATE events SET payload = ? WHERE seq = ?", [(p, seq) for seq, p in payloads]
        )
        await self._many(_UPDATE_CURRENT_VALUE, values)
        for r in values:  # only while still that seq's: what is left is not known
            self.kept.values.pop(r[1], None)


def _json_array(items: Collection[str]) -> str:
    # Text, not bytes: SQLite would read a BLOB argument of json_each as binary JSONB.
    return _encode_json(list(items)).decode()
