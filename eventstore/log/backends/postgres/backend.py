"""The PostgreSQL backend, through asyncpg (the `postgres` extra).

URL: `postgresql://USER[:PASSWORD]@HOST[:PORT]/DB[?schema=NAME]`. Every query parameter asyncpg
knows (sslmode, …) passes through; `schema` is ours: the tables live in that PostgreSQL schema,
created if missing (default: the connection's search_path, normally `public`). Several stores, or
one per test, can share a database that way.

Semantics are SQLite's: one write transaction at a time across every process and replica on the
database (`transaction`, under the writer's lease of `heads`), reads from a pool of connections
see committed data only (`queries`). All SQL is constant text, so asyncpg prepares each statement
once per connection and reuses it. The tables and their migrations are in `schema`; the write
transaction's statements in `statements`; the URL, the rows and the one place driver errors are
translated in `driver`; the data-key store in `keys`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from typing import Any, Final

import anyio
import asyncpg
from asyncpg.pool import PoolConnectionProxy

from eventstore.log.backends import rows as shape
from eventstore.log.backends.base import LogBackend, WriteTransaction
from eventstore.log.backends.migrations import (
    SELECT_SCHEMA_VERSION,
    pending_migrations,
    require_current,
)
from eventstore.log.backends.postgres import queries as sql
from eventstore.log.backends.postgres.driver import (
    DRIVER_ERRORS,
    current_row,
    describe,
    encode,
    event_row,
    keep_session,
    lost,
    quote_ident,
    scope_row,
    split_url,
    translated,
)
from eventstore.log.backends.postgres.heads import PREPARE_TAKE, HeadsHolder
from eventstore.log.backends.postgres.schema import (
    HAS_SCHEMA_VERSION,
    MIGRATION_LOCK,
    MIGRATIONS,
    SCHEMA_VERSION,
    TAKE_MIGRATION_LOCK,
    create_schema,
)
from eventstore.log.backends.postgres.transaction import PostgresTransaction, rollback
from eventstore.log.backends.rows import CurrentRow, EventRow, LogHead, ScopeRow
from eventstore.log.config import StoreConfig
from eventstore.log.errors import (
    CompactionRunningError,
    StoreClosedError,
)

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "PostgresBackend", "split_url"]

# One compactor at a time on a database's log, across processes and replicas: compaction holds
# this session-level advisory lock for its whole run, on a pooled connection set aside for it
# (its reads and its short delete transactions use other connections, so writers never wait on
# it). Two 32-bit keys: a fixed class ("trlc") and the schema the tables live in, so the logs of
# different schemas of one database compact independently (two schemas whose names hash alike
# would only take turns). `try`: a second compactor is told at once rather than queueing. The
# server drops the lock with the session if the compactor's connection dies.
_COMPACTION_LOCK: Final = 0x74726C63
_TRY_COMPACTION_LOCK: Final = "SELECT pg_try_advisory_lock($1, hashtext(current_schema()))"
_UNLOCK_COMPACTION: Final = "SELECT pg_advisory_unlock($1, hashtext(current_schema()))"


class PostgresBackend(LogBackend):
    """The log in a PostgreSQL database (or one schema of it)."""

    def __init__(self, pool: asyncpg.Pool, where: str) -> None:
        self._pool: asyncpg.Pool | None = pool
        self._where = where
        # Writers of this process queue here instead of each holding a pooled connection while
        # they wait for the database lock.
        self._write_lock = anyio.Lock()
        # The writer's connection, kept from one write transaction to the next: its session
        # holds the id of its last transaction, which tells whether the heads kept are current.
        self._writer: PoolConnectionProxy[asyncpg.Record] | None = None
        self._heads = HeadsHolder()
        self.read_only = False  # set by connect

    @classmethod
    async def connect(
        cls, url: str, config: StoreConfig, *, min_size: int = 1, max_size: int = 10
    ) -> PostgresBackend:
        """Open a pool on the database the URL names, and migrate its schema."""
        dsn, schema = split_url(url)
        where = describe(url) + (f" schema {schema}" if schema else "")
        settings = {"application_name": "tasktrail"}
        if schema is not None:
            settings["search_path"] = quote_ident(schema)
        if config.durability == "normal":
            # An acknowledged write survives a crash of this process, not of the server.
            settings["synchronous_commit"] = "off"
        if config.read_only:
            # The server refuses any write of these sessions; nothing is made or migrated.
            settings["default_transaction_read_only"] = "on"
        with translated(where):
            if schema is not None and not config.read_only:
                await create_schema(dsn, schema)
            pool = await asyncpg.create_pool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                server_settings=settings,
                reset=keep_session,
            )
        backend = cls(pool, where)
        backend.read_only = config.read_only
        try:
            await (backend._check_schema() if config.read_only else backend._migrate())
        except BaseException:
            with anyio.CancelScope(shield=True):
                await backend.aclose()
            raise
        return backend

    async def _migrate(self) -> None:
        pool = self._open_pool()
        with translated(self._where):
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute(TAKE_MIGRATION_LOCK, MIGRATION_LOCK)
                version = 0
                if await conn.fetchval(HAS_SCHEMA_VERSION):
                    version = await conn.fetchval(SELECT_SCHEMA_VERSION) or 0
                steps = pending_migrations(version, MIGRATIONS, self._where)
                for step in steps:
                    for statement in step.statements:
                        await conn.execute(statement)
                if steps:
                    await conn.execute("UPDATE schema_version SET version = $1", SCHEMA_VERSION)

    async def _check_schema(self) -> None:
        """Read-only, the schema cannot be migrated: it must be the one this code writes."""
        with translated(self._where):
            async with self._open_pool().acquire() as conn:
                version = 0
                if await conn.fetchval(HAS_SCHEMA_VERSION):
                    version = await conn.fetchval(SELECT_SCHEMA_VERSION) or 0
        require_current(
            version, MIGRATIONS, self._where, "open it once without read_only to migrate it"
        )

    def _open_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreClosedError("PostgreSQL log")
        return self._pool

    @asynccontextmanager
    async def write(self) -> AsyncIterator[WriteTransaction]:
        async with self._write_lock:
            pool = self._open_pool()
            with translated(self._where):
                conn = self._writer
                if conn is None or lost(conn):
                    self._heads.heads = None
                    self._writer = None
                    if conn is not None:  # the pool replaces it (a no-op if released already)
                        await pool.release(conn)
                    conn = self._writer = await _writer_connection(pool)
                try:
                    transaction = PostgresTransaction(conn, self._heads)
                    await transaction.begin()  # the lease is held for the whole block
                    yield transaction
                    await transaction.commit()
                except BaseException:
                    # What the transaction kept of the heads is not what the tables hold.
                    self._heads.heads = None
                    with anyio.CancelScope(shield=True):
                        await rollback(conn)
                    raise

    @asynccontextmanager
    async def compaction_lock(self) -> AsyncIterator[None]:
        pool = self._open_pool()
        with translated(self._where):
            conn = await pool.acquire()
        try:
            with translated(self._where):
                held = await conn.fetchval(_TRY_COMPACTION_LOCK, _COMPACTION_LOCK)
            if not held:
                raise CompactionRunningError(self._where)
            try:
                yield
            finally:
                with anyio.CancelScope(shield=True):
                    await _unlock_compaction(conn)
        finally:
            with anyio.CancelScope(shield=True):
                await pool.release(conn)

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        pool = self._open_pool()
        with translated(self._where):
            rows: list[asyncpg.Record] = await pool.fetch(sql, *args)
        return rows

    async def select_scopes(self, where: shape.ScopeFilter | None = None) -> list[ScopeRow]:
        if where is None:
            return [scope_row(r) for r in await self._fetch(sql.SELECT_ALL_SCOPES)]
        if where.scope_key is not None:
            rows = await self._fetch(sql.SELECT_SCOPE, where.scope_key)
            found = [scope_row(r) for r in rows]
            return [r for r in found if where.matches(r)][: where.limit]
        before_at, before_id = where.before if where.before is not None else (None, None)
        rows = await self._fetch(
            sql.SELECT_SCOPES_PAGE,
            where.kind,
            encode(where.dag_id),
            encode(where.run_id),
            encode(where.task_id),
            where.since,
            where.until,
            before_at,
            before_id,
            where.limit,
        )
        return [scope_row(r) for r in rows]

    async def select_current(
        self, scope_id: int | None = None, where: shape.CurrentFilter = shape.EVERY_ROW
    ) -> list[CurrentRow]:
        if scope_id is None:
            found = [current_row(r) for r in await self._fetch(sql.SELECT_ALL_CURRENT)]
            return [r for r in found if where.matches(r)][: where.limit]
        if where.key is not None:
            rows = await self._fetch(sql.SELECT_CURRENT, scope_id, where.key.encode())
            return where.keep([current_row(r) for r in rows])
        if where == shape.EVERY_ROW:
            return [current_row(r) for r in await self._fetch(sql.SELECT_CURRENT_ALL, scope_id)]
        now = sql.NO_NOW if where.now is None else where.now
        after = (where.after_key or "").encode()
        rows = await self._fetch(sql.SELECT_CURRENT_PAGE, scope_id, after, now, where.limit)
        return [current_row(r) for r in rows]

    async def select_events(self, scope_id: int, where: shape.EventFilter) -> list[EventRow]:
        query, params = sql.events_query(scope_id, where)
        return [event_row(r) for r in await self._fetch(query, *params)]

    async def select_markers(
        self, scope_ids: Collection[int], kinds: Collection[str], *, through_seq: int | None = None
    ) -> dict[tuple[int, str], EventRow]:
        bound = sql.NO_BOUND if through_seq is None else through_seq
        rows = await self._fetch(sql.SELECT_MARKERS, sorted(scope_ids), sorted(kinds), bound)
        return {(r.scope_id, r.kind): r for r in map(event_row, rows)}

    async def select_latest_per_key(
        self, scope_id: int, *, after_seq: int, through_seq: int
    ) -> list[EventRow]:
        rows = await self._fetch(sql.SELECT_LATEST_PER_KEY, scope_id, after_seq, through_seq)
        return [event_row(r) for r in rows]

    async def select_all_events(
        self, *, after_seq: int = 0, batch: int = 1000
    ) -> AsyncIterator[EventRow]:
        while True:
            rows = await self._fetch(sql.SELECT_ALL_EVENTS, after_seq, batch)
            for r in rows:
                yield event_row(r)
            if len(rows) < batch:
                return
            after_seq = rows[-1][0]

    async def select_head(self) -> LogHead:
        # A plain read of the head row: MVCC, so it never waits for the writer holding its lock,
        # and sees the last committed head.
        rows = await self._fetch(sql.SELECT_HEAD)
        return LogHead(rows[0][0], rows[0][1])

    async def select_storage(self, *, idempotent_before: int | None = None) -> shape.Storage:
        total = int((await self._fetch(sql.SELECT_STORAGE_BYTES))[0][0])
        if idempotent_before is None:
            return shape.Storage(total)
        rows = await self._fetch(sql.COUNT_IDEMPOTENT, idempotent_before)
        return shape.Storage(total, int(rows[0][0]))

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        writer, self._writer = self._writer, None
        if pool is not None:
            with anyio.CancelScope(shield=True):
                if writer is not None:
                    await pool.release(writer)
                await pool.close()


async def _writer_connection(pool: asyncpg.Pool) -> PoolConnectionProxy[asyncpg.Record]:
    """A pooled connection made the writer's: the statements that take the lease prepared on it.
    One that cannot be is closed, so that no connection goes back to the pool half prepared."""
    conn: PoolConnectionProxy[asyncpg.Record] = await pool.acquire()
    try:
        await conn.execute(PREPARE_TAKE)
    except BaseException:
        conn.terminate()
        with anyio.CancelScope(shield=True):
            await pool.release(conn)
        raise
    return conn


async def _unlock_compaction(conn: PoolConnectionProxy[asyncpg.Record]) -> None:
    try:
        await conn.fetchval(_UNLOCK_COMPACTION, _COMPACTION_LOCK)
    except DRIVER_ERRORS:
        # The session may still hold the lock: end it, and the server releases the lock.
        conn.terminate()
