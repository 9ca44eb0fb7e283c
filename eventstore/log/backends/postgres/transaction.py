"""The write transaction: one writer at a time on the database, positions in commit order.

A batch that writes to scopes the log knows costs two round trips whatever its size: take the
writer's lease (and check that the heads this writer kept are current, `heads`), then one
statement that applies every write as arrays (`unnest`), commits and gives the lease up. When
another process wrote since, the heads are read again: one more. Idempotency ids add one (all of
the batch's at once); a new scope, or any write beyond the one statement, a transaction block
(BEGIN, the write, and COMMIT with the lease given up after it).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import Any, Final

import anyio
import asyncpg
from asyncpg.pool import PoolConnectionProxy
from msgspec import Struct
from msgspec.structs import astuple, replace

from eventstore.log.backends import rows as shape
from eventstore.log.backends.base import WriteTransaction
from eventstore.log.backends.postgres import statements as sql
from eventstore.log.backends.postgres.driver import (
    DRIVER_ERRORS,
    encode,
    lost,
    scope_row,
)
from eventstore.log.backends.postgres.heads import (
    BEGIN,
    COMMIT_AND_RELEASE,
    KEPT,
    RELEASE,
    RELEASE_ALL,
    TAKE_AND_CHECK,
    HeadsHolder,
    WriterHeads,
)
from eventstore.log.backends.rows import CurrentRow, EventRow, Ids, Keys, KeysAt, LogHead, ScopeRow

__all__ = ["PostgresTransaction", "rollback"]

# Global positions in commit order. The log planner hands out `seq` from the log head it reads
# while it holds the writer's lease (heads.py), a session-level advisory lock every writer of
# every process and replica on this database takes before anything else: the next writer can
# only read the head once the previous one has committed (it waits for the handover lock that
# the previous batch's last statement holds until its commit). Every statement runs at READ
# COMMITTED (asked for explicitly in a transaction block, and the default of a statement outside
# one), so each statement after the lease is taken sees everything committed before it: the head
# the previous writer left, its scope heads, its idempotency ids. So positions are handed out in
# exactly the order the transactions commit: when a reader can see position p, every position
# below p is committed and visible too, and a reader tailing the log from p never skips an event
# that commits later. A sequence or identity column would not do: its values are taken before
# commit, so a transaction holding position 5 could commit after one holding 6, and a tailer
# that saw 6 would move past 5 for good. The lease is also what makes version checks, fencing and
# idempotency hold across processes: the planner reads scope heads after taking it, so no other
# writer can change them before commit.


class PostgresTransaction(WriteTransaction):
    """The write primitives; writes are kept until a read or the commit needs them applied.

    The backend takes the lease (`begin`) before handing the transaction out. Kept writes go out
    in one `sql.APPLY` statement, outside a transaction block when it is the only write (it then
    commits by itself); any other write first begins a block. Deletes from the projection apply
    what is kept first and then run at once, so every write lands in the order the log asked for
    it. What the transaction reads and writes of the heads goes into the writer's heads
    (`heads.WriterHeads`); if it does not commit, the backend forgets them.
    """

    def __init__(self, conn: PoolConnectionProxy[asyncpg.Record], holder: HeadsHolder) -> None:
        self.conn = conn
        self._holder = holder
        self._kept: WriterHeads | None = None  # the writer's heads, once begun
        self._stamped = False  # this transaction's id is in log_head's xmin
        self._changed = False  # a statement changed the database
        self._block = False  # in a transaction block (BEGIN sent)
        self._events: list[EventRow] = []
        self._current: dict[tuple[int, str], CurrentRow] = {}
        self._scopes: dict[int, _ScopeHead] = {}  # by scope_id
        self._idempotent: list[shape.IdempotentRow] = []
        self._tries: dict[tuple[int, int], int] = {}
        self._new_head: LogHead | None = None

    @property
    def begun(self) -> bool:
        return self._kept is not None

    async def begin(self) -> None:
        """Take the lease, and learn whether the heads kept are current."""
        await self._begin()

    async def _begin(self) -> WriterHeads:
        kept = self._kept
        if kept is None:
            status = await self.conn.execute(TAKE_AND_CHECK)
            kept = self._holder.heads if status == KEPT else None
            if kept is None:
                # Another writer changed the database since (or nothing is kept yet): what
                # this transaction reads under the lease is kept from now on. (Stamped only if
                # it writes: after a transaction that wrote nothing, the heads are read again.)
                kept = self._holder.heads = WriterHeads()
            self._kept = kept
        return kept

    async def _in_block(self) -> None:
        """Begin a transaction block, if not yet: a write before the last must not commit alone."""
        if not self._block:
            await self.conn.execute(BEGIN)
            self._block = True

    async def _run(self, sql: str, *args: Any) -> str:
        """A statement that changes the database, after every kept write, in the block."""
        await self.flush()
        await self._in_block()
        self._changed = True
        status: str = await self.conn.execute(sql, *args)
        return status

    async def flush(self, *, stamp: bool = False, last: bool = False) -> bool:
        """Apply every kept write, in one statement (with `stamp`, also when nothing is kept);
        returns whether it did. The `last` statement outside a block commits and gives the lease
        up; any other runs in the block."""
        kept = await self._begin()
        if not (
            self._events
            or self._current
            or self._scopes
            or self._idempotent
            or self._new_head is not None
            or (stamp and not self._stamped)
        ):
            return False
        if not last:
            await self._in_block()
        events, current, idempotent = self._events, self._current.values(), self._idempotent
        tries = kept.new_tries(self._tries)
        head = self._new_head or kept.head or LogHead()
        scope_heads = _columns(self._scopes.values(), 4)
        await self.conn.execute(
            sql.APPLY,
            _records(events, _EVENT_KEY),
            _records(current, _CURRENT_KEY),
            *scope_heads,
            _records(idempotent, _IDEMPOTENCY_ID),
            [(scope_id, try_number, first) for (scope_id, try_number), first in tries.items()],
            head.last_seq,
            head.last_recorded_at,
            self._new_head is not None,
            last and not self._block,
        )
        self._stamped = self._changed = True
        kept.record_tries(tries)
        self._events, self._current, self._scopes, self._idempotent = [], {}, {}, []
        self._tries = {}
        if self._new_head is not None:
            kept.head, self._new_head = self._new_head, None
        return True

    async def commit(self) -> None:
        """Apply what is kept and commit (a transaction that changed anything stamps log_head),
        then give the lease up."""
        if not self.begun:
            return
        with anyio.CancelScope(shield=True):
            if self._block:
                await self.flush(stamp=self._changed)
                await self.conn.execute(COMMIT_AND_RELEASE)
            elif not await self.flush(stamp=self._changed, last=True):
                await self.conn.execute(RELEASE)

    async def _select_head(self) -> LogHead:
        kept = await self._begin()
        head = self._new_head or kept.head
        if head is None:
            row = await self.conn.fetchrow(sql.SELECT_HEAD)
            assert row is not None, "log_head has its one row from the first migration"
            head = kept.head = LogHead(last_seq=row[0], last_recorded_at=row[1])
        return LogHead(last_seq=head.last_seq, last_recorded_at=head.last_recorded_at)

    async def _select_scopes(
        self, scope_keys: list[str], task: shape.Task | None
    ) -> dict[str, ScopeRow]:
        await self.flush()
        rows = await self.conn.fetch(sql.SELECT_SCOPES, scope_keys) if scope_keys else []
        if task is not None:
            parts = [part.encode() for part in task]
            rows = [*rows, *await self.conn.fetch(sql.SELECT_TASK_SCOPES, *parts)]
        return {r[1]: scope_row(r) for r in rows}

    async def select_head_and_scopes(
        self, scope_keys: Collection[str] = (), *, task: shape.Task | None = None
    ) -> tuple[LogHead, dict[str, ScopeRow]]:
        kept = await self._begin()
        wanted = list(scope_keys)
        fresh = kept.head is not None and self._new_head is None and not self._pending()
        if fresh and task is None:
            found = kept.known(wanted)
            if found is not None:
                return await self._select_head(), found
        if task is not None or self._new_head is not None or self._pending():
            return await self._select_head(), await self._select_scopes(wanted, task)
        rows = await self.conn.fetch(sql.SELECT_HEAD_AND_SCOPES, wanted, sql.HEADS_READ + 1)
        kept.head = LogHead(last_seq=rows[0][0], last_recorded_at=rows[0][1])
        scopes = {r[3]: scope_row(r[2:]) for r in rows if r[2] is not None}
        for key in wanted:
            row = scopes.get(key)
            if row is None:
                kept.keep_absent(key)
            else:
                kept.keep_scope(row)
        for r in rows:
            keys = r[11] or ()
            if r[2] is not None and len(keys) <= sql.HEADS_READ:
                heads = dict(zip((k.decode() for k in keys), r[12] or (), strict=True))
                kept.keep_values(r[2], heads)
        return await self._select_head(), scopes

    def _pending(self) -> bool:
        return bool(self._events or self._current or self._scopes or self._idempotent)

    async def select_current_heads(
        self, pairs: shape.Pairs = (), *, scope_id: int | None = None, now: int = 0
    ) -> dict[tuple[int, str], bytes]:
        """The heads of a batch's keys: of the scopes whose every value head is known (small
        scopes) from what is kept, the rest in one statement; a whole scope's live keys in
        one more."""
        kept = await self._begin()
        found: dict[tuple[int, str], bytes] = {}
        asked: list[tuple[int, str]] = []
        for pair in pairs:
            known = kept.values.get(pair[0])
            if known is None:
                asked.append(pair)
            elif pair[1] in known:
                found[pair] = known[pair[1]]
        if asked or scope_id is not None:
            await self.flush()
        if asked:
            rows = await self.conn.fetch(
                sql.SELECT_CURRENT_HEADS, [p[0] for p in asked], [p[1].encode() for p in asked]
            )
            found.update(((r[0], r[1].decode()), r[2]) for r in rows)
        if scope_id is not None:
            rows = await self.conn.fetch(sql.SELECT_LIVE_HEADS, scope_id, now)
            found.update(((scope_id, r[0].decode()), r[1]) for r in rows)
        return found

    async def select_idempotent(self, pairs: shape.Pairs) -> dict[tuple[int, str], bytes]:
        if not pairs:
            return {}
        await self.flush()
        rows = await self.conn.fetch(
            sql.SELECT_IDEMPOTENT, [k[0] for k in pairs], [k[1].encode() for k in pairs]
        )
        return {(r[0], r[1].decode()): r[2] for r in rows}

    async def insert(self, batch: shape.Insert) -> list[int]:
        """New scopes go in at once (their ids are needed now), in the transaction block; the
        rest is kept for the statement that applies the batch."""
        kept = await self._begin()
        ids = [await self._insert_scope(row) for row in batch.scopes if not row.scope_id]
        if batch.events:
            self._keep_events(batch.events)
        for current in batch.current:
            self._current[(current.scope_id, current.key)] = current
            kept.set_value(current.scope_id, current.key, current.value[:2])
        for row in batch.scopes:
            if row.scope_id:
                # A copy: the batch goes on changing the row as it plans.
                scope_head = (row.scope_id, row.version, row.max_try, row.updated_at)
                self._scopes[row.scope_id] = scope_head
                kept.keep_scope(row)
        self._idempotent.extend(batch.idempotent)
        if batch.head is not None:
            self._new_head = replace(batch.head)
        return ids

    async def _insert_scope(self, row: ScopeRow) -> int:
        await self.flush()
        await self._in_block()
        self._changed = True
        scope_id: int = await self.conn.fetchval(
            sql.INSERT_SCOPE,
            row.scope_key,
            row.version,
            row.max_try,
            row.updated_at,
            encode(row.dag_id),
            encode(row.run_id),
            encode(row.task_id),
            row.map_index,
        )
        kept = await self._begin()
        kept.keep_scope(replace(row, scope_id=scope_id))
        kept.values[scope_id] = {}
        return scope_id

    def _keep_events(self, rows: Sequence[EventRow]) -> None:
        self._events.extend(rows)
        # Where each try starts, kept once per try (schema step 5): the first of a batch's
        # events of a try it may start; a try already started keeps its row.
        starts = self._tries
        for r in rows:
            if r.try_number is not None:
                starts.setdefault((r.scope_id, r.try_number), r.version)

    async def delete_current(
        self, keys: Keys = (), *, keys_at: KeysAt = (), scope_ids: Ids = (), every: bool = False
    ) -> None:
        if not (every or scope_ids or keys or keys_at):
            return
        if every:
            await self._run(sql.DELETE_ALL_CURRENT)
        if scope_ids:
            await self._run(sql.CLEAR_CURRENT, list(scope_ids))
        if keys:
            await self._run(sql.DELETE_CURRENT, [p[0] for p in keys], [p[1].encode() for p in keys])
        if keys_at:
            await self._run(
                sql.DELETE_CURRENT_AT,
                [r[0] for r in keys_at],
                [r[1].encode() for r in keys_at],
                [r[2] for r in keys_at],
            )
        kept = await self._begin()
        kept.deleted_current(keys, keys_at=keys_at, scope_ids=scope_ids, every=every)

    async def delete_idempotent(self, *, recorded_before: int, limit: int) -> int:
        status = await self._run(sql.DELETE_IDEMPOTENT, recorded_before, limit)
        return int(status.split()[-1])  # "DELETE <count>"

    async def delete_events(self, seqs: Sequence[int]) -> int:
        status = await self._run(sql.DELETE_EVENTS, list(seqs))
        return int(status.split()[-1])  # "DELETE <count>"

    async def update_stored(
        self, *, payloads: shape.Payloads = (), values: shape.Values = ()
    ) -> None:
        if not (payloads or values):
            return
        kept = await self._begin()
        if payloads:
            await self._run(sql.UPDATE_PAYLOADS, [r[0] for r in payloads], [r[1] for r in payloads])
        if values:
            await self._run(
                sql.UPDATE_CURRENT_VALUES,
                [r[0] for r in values],
                [r[1] for r in values],
                [r[2].encode() for r in values],
                [r[3] for r in values],
            )
            for r in values:
                kept.values.pop(r[1], None)


async def rollback(conn: PoolConnectionProxy[asyncpg.Record]) -> None:
    """End a failed transaction and give the lease up. A connection that cannot is closed: the
    server then rolls back and releases the lease itself."""
    try:
        if conn.is_in_transaction():
            await conn.execute("ROLLBACK")
        await conn.execute(RELEASE_ALL)
    except DRIVER_ERRORS:
        if not lost(conn):  # a lost one is closed already
            conn.terminate()


# What a batch writes of a scope's row (the scope head): scope_id, version, max_try, updated_at.
_ScopeHead = tuple[int, int, int | None, int]

# Where the text that goes as UTF-8 bytes is, in each row type's tuple.
_EVENT_KEY: Final = EventRow.__struct_fields__.index("key")
_CURRENT_KEY: Final = CurrentRow.__struct_fields__.index("key")
_IDEMPOTENCY_ID: Final = shape.IdempotentRow.__struct_fields__.index("idempotency_id")


def _records(rows: Iterable[Struct], text: int) -> list[tuple[Any, ...]]:
    """The rows as tuples in field order (the order of their table's columns), the field at
    `text` as UTF-8 bytes: an array of the table's row type, for the server to unnest."""
    records = []
    for record in map(astuple, rows):
        value = record[text]
        if value is not None:
            record = (*record[:text], value.encode(), *record[text + 1 :])
        records.append(record)
    return records


def _columns(rows: Collection[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows of `width` values as one list per column (each goes to the server as an array)."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(column) for column in zip(*rows, strict=True)]
