"""The SQLite backend.

WAL mode: readers never wait for the writer. Writes go through one connection and take SQLite's
write lock with BEGIN IMMEDIATE, so writers in other processes on the same file queue behind it
instead of failing halfway through a transaction.

Where the time goes decides which thread runs what. The statements of a write transaction only
touch SQLite's page cache and take microseconds, so they run on the event loop thread, directly on
a stdlib connection; a hop to a worker thread for each would cost more than the statement. The
exception is a big batch: its statements over many rows (the log writes them in slices) run in
the worker thread, and so does its COMMIT, since the page cache then spills to the WAL file. BEGIN
IMMEDIATE is first tried on the loop thread without waiting (the write connection's busy timeout
is 0), which succeeds unless another process is writing; only then is it retried in the worker
thread, waiting up to the busy timeout.

COMMIT (the fsync) runs on the loop thread too while commits are quick, and in the worker
thread once they are not (`_commit`): on a busy machine, waking a thread for the commit and
waking the loop again afterwards took longer than a quick fsync, and a batch's writers waited for
both; a slow disk must not stop the loop, so commits slower than `_INLINE_COMMIT_SECONDS` on
average go to the thread.

Point reads (`select_scope`, `select_current`, `select_current_all`) also run on the loop
thread, on a second stdlib connection: in WAL mode they never wait for a writer, and each one is
a new autocommit statement, so it sees every committed write, including those of other
processes. Long reads (history, the whole log) go through aiosqlite's thread so they do not
stall the loop.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from functools import partial, wraps
from pathlib import Path
from typing import Any, Final, TypeVar

import aiosqlite
import anyio
import anyio.to_thread
import msgspec
from msgspec.structs import astuple

from eventstore.log.backends.base import (
    CurrentRow,
    EventFilter,
    EventRow,
    IdempotentRow,
    LogBackend,
    LogHead,
    ScopeFilter,
    ScopeRow,
    WriteTransaction,
)
from eventstore.log.backends.migrations import Migration, latest_version, pending_migrations
from eventstore.log.backends.sqlite.files import (
    connect_read_only,
    translate,
    translate_os,
)
from eventstore.log.errors import (
    CompactionRunningError,
    ConfigError,
    ReadOnlyStoreError,
    StorageError,
    StoreClosedError,
)

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "SQLiteBackend"]

_SCHEMA_V1: Final = (
    """CREATE TABLE schema_version (version INTEGER NOT NULL)""",
    """INSERT INTO schema_version (version) VALUES (0)""",
    """CREATE TABLE log_head (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        last_seq INTEGER NOT NULL,
        last_recorded_at INTEGER NOT NULL
    )""",
    """INSERT INTO log_head (id, last_seq, last_recorded_at) VALUES (1, 0, 0)""",
    """CREATE TABLE scopes (
        scope_id INTEGER PRIMARY KEY,
        scope_key TEXT NOT NULL UNIQUE,
        version INTEGER NOT NULL,
        max_try INTEGER,
        updated_at INTEGER NOT NULL,
        dag_id TEXT,
        run_id TEXT,
        task_id TEXT,
        map_index INTEGER
    )""",
    """CREATE INDEX scopes_by_task ON scopes (dag_id, run_id, task_id) WHERE dag_id IS NOT NULL""",
    """CREATE TABLE events (
        seq INTEGER PRIMARY KEY,
        scope_id INTEGER NOT NULL,
        version INTEGER NOT NULL,
        kind TEXT NOT NULL,
        key TEXT,
        expires_at INTEGER,
        recorded_at INTEGER NOT NULL,
        try_number INTEGER,
        actor TEXT NOT NULL,
        payload BLOB NOT NULL
    )""",
    """CREATE UNIQUE INDEX events_by_scope_version ON events (scope_id, version)""",
    """CREATE INDEX events_by_scope_key ON events (scope_id, key, seq)""",
    """CREATE TABLE current (
        scope_id INTEGER NOT NULL,
        key TEXT NOT NULL,
        value BLOB NOT NULL,
        expires_at INTEGER,
        version INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (scope_id, key)
    ) WITHOUT ROWID""",
    """CREATE INDEX current_by_expiry ON current (expires_at) WHERE expires_at IS NOT NULL""",
    """CREATE TABLE idempotency (
        scope_id INTEGER NOT NULL,
        idempotency_id TEXT NOT NULL,
        result BLOB NOT NULL,
        PRIMARY KEY (scope_id, idempotency_id)
    ) WITHOUT ROWID""",
)

# The schema's history, oldest first; a change to the schema is a new step at the end.
MIGRATIONS: Final = (
    Migration(1, "log, scopes, projection and idempotency tables", _SCHEMA_V1),
    Migration(
        2,
        "history indexes: where a try and where a time lands in a scope, in one seek",
        # IF NOT EXISTS: version 1 files opened by tasktrail 0.1 may have them already.
        (
            """CREATE INDEX IF NOT EXISTS events_by_scope_try ON events (scope_id, try_number)
            WHERE try_number IS NOT NULL""",
            """CREATE INDEX IF NOT EXISTS events_by_scope_time ON events (scope_id, recorded_at)""",
        ),
    ),
    Migration(
        3,
        "scopes index: the web page lists scopes most recently written first",
        ("""CREATE INDEX IF NOT EXISTS scopes_by_updated ON scopes (updated_at, scope_id)""",),
    ),
    Migration(
        4,
        "idempotency: keyed by id, then scope, so ids made in time order append to the index; "
        "with the time each result was recorded, so compaction can forget old ones",
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
)
SCHEMA_VERSION: Final = latest_version(MIGRATIONS)

T = TypeVar("T")

# The COMMIT that finds the WAL past this many pages also checkpoints it into the database file,
# with an fsync of that file, and its writers wait for that. SQLite's default, 1000 pages (4 MiB),
# made every 15th or so batch of a service under a write load take several times as long; at
# 4000 a checkpoint comes a quarter as often, and costs less than four of those, since a page
# written many times in between (the ends of the indexes) is copied once.
_CHECKPOINT_PAGES: Final = 4000

# COMMITs quicker than this on average run on the loop thread; slower ones in the worker thread.
_INLINE_COMMIT_SECONDS: Final = 0.005
# A transaction that wrote more rows than this commits in the worker thread whatever the
# average: its pages go to the WAL at COMMIT, which takes longer than a request may hold the loop.
_INLINE_COMMIT_ROWS: Final = 1000
# Statements over more rows than this (the slices of a big batch) run in the worker thread.
_INLINE_ROWS: Final = 64

# How long a writer waits for another process's write lock before failing.
_BUSY_TIMEOUT_MS: Final = 10_000

_encode_json = msgspec.json.Encoder().encode

_EVENT_COLUMNS: Final = (
    "seq, scope_id, version, kind, key, expires_at, recorded_at, try_number, actor, payload"
)
_CURRENT_COLUMNS: Final = "scope_id, key, value, expires_at, version, seq, updated_at"
_SCOPE_COLUMNS: Final = (
    "scope_id, scope_key, version, max_try, updated_at, dag_id, run_id, task_id, map_index"
)

_INSERT_EVENT: Final = (
    f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_UPSERT_CURRENT: Final = (
    f"INSERT INTO current ({_CURRENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (scope_id, key) DO UPDATE SET value = excluded.value, "
    "expires_at = excluded.expires_at, version = excluded.version, seq = excluded.seq, "
    "updated_at = excluded.updated_at"
)
_SELECT_CURRENT: Final = f"SELECT {_CURRENT_COLUMNS} FROM current WHERE scope_id = ? AND key = ?"
_SELECT_CURRENT_ALL: Final = (
    f"SELECT {_CURRENT_COLUMNS} FROM current WHERE scope_id = ? ORDER BY key"
)
# Keys are never empty, so '' stands for "from the first key".
_SELECT_CURRENT_PAGE: Final = (
    f"SELECT {_CURRENT_COLUMNS} FROM current WHERE scope_id = ? AND key > ? "
    "AND (expires_at IS NULL OR expires_at > ?) ORDER BY key LIMIT ?"
)
_SELECT_SCOPE: Final = f"SELECT {_SCOPE_COLUMNS} FROM scopes WHERE scope_key = ?"
# One statement for a whole batch of keys: the keys travel as one JSON array parameter.
_SELECT_SCOPES: Final = (
    f"SELECT {_SCOPE_COLUMNS} FROM scopes WHERE scope_key IN (SELECT value FROM json_each(?))"
)
_SELECT_TASK_SCOPES: Final = (
    f"SELECT {_SCOPE_COLUMNS} FROM scopes WHERE dag_id = ? AND run_id = ? AND task_id = ?"
)
_SELECT_LIVE_KEYS: Final = (
    "SELECT key FROM current WHERE scope_id = ? AND (expires_at IS NULL OR expires_at > ?)"
)
# The flags of stored values (eventstore.log.crypto) are in their first two bytes.
_SELECT_CURRENT_HEAD: Final = (
    "SELECT substr(value, 1, 2) FROM current WHERE scope_id = ? AND key = ?"
)
_SELECT_CURRENT_HEADS: Final = (
    "SELECT key, substr(value, 1, 2) FROM current "
    "WHERE scope_id = ? AND key IN (SELECT value FROM json_each(?))"
)
# Each filter is a parameter that is either NULL (no filter) or the value to match, so one
# statement serves every combination; the cursor is (updated_at, scope_id) of the last row seen.
_SELECT_SCOPES_PAGE: Final = (
    f"SELECT {_SCOPE_COLUMNS} FROM scopes "
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
_INSERT_SCOPE: Final = (
    "INSERT INTO scopes (scope_key, version, max_try, updated_at, dag_id, run_id, task_id, "
    "map_index) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING scope_id"
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
_INSERT_IDEMPOTENT: Final = (
    "INSERT INTO idempotency (scope_id, idempotency_id, result, recorded_at) VALUES (?, ?, ?, ?)"
)
# Compaction forgets old results a few hundred at a time, each batch its own short transaction.
_DELETE_IDEMPOTENT: Final = (
    "DELETE FROM idempotency WHERE (idempotency_id, scope_id) IN ("
    "SELECT idempotency_id, scope_id FROM idempotency WHERE recorded_at < ? LIMIT ?)"
)
_COUNT_IDEMPOTENT: Final = "SELECT count(*) FROM idempotency WHERE recorded_at < ?"
_UPDATE_CURRENT_VALUE: Final = (
    "UPDATE current SET value = ? WHERE scope_id = ? AND key = ? AND seq = ?"
)
_SELECT_LAST_SEQ: Final = "SELECT last_seq FROM log_head"
_SELECT_ERASED_THROUGH: Final = (
    "SELECT scope_id, max(seq) FROM events WHERE scope_id IN (SELECT value FROM json_each(?)) "
    "AND key IS NULL AND kind = 'erased' GROUP BY scope_id"
)
_SELECT_ALL_EVENTS: Final = (
    f"SELECT {_EVENT_COLUMNS} FROM events WHERE seq > ? ORDER BY seq LIMIT ?"
)

_NO_BOUND: Final = 2**63 - 1
# A clear or a compaction marker has no key, so the (scope_id, key, seq) index finds the last one
# with one seek.
_SELECT_LAST_SCOPE_EVENT: Final = (
    f"SELECT {_EVENT_COLUMNS} FROM events "
    "WHERE scope_id = ? AND key IS NULL AND kind = ? AND seq <= ? ORDER BY seq DESC LIMIT 1"
)
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
SELECT {_EVENT_COLUMNS} FROM events WHERE seq IN (
    SELECT (
        SELECT MAX(e.seq) FROM events AS e
        WHERE e.scope_id = :scope AND e.key = keys.key AND e.seq <= :through
    ) AS last
    FROM keys WHERE keys.key IS NOT NULL
) AND seq > :after"""


_Read = TypeVar("_Read", bound=Callable[..., Awaitable[Any]])


def _translated(read: _Read) -> _Read:
    """A read whose SQLite errors (an I/O error, a damaged file) become StorageErrors."""

    @wraps(read)
    async def reading(self: SQLiteBackend, *args: Any, **kwargs: Any) -> Any:
        try:
            return await read(self, *args, **kwargs)
        except sqlite3.Error as error:
            raise translate(error, self.path) from error

    return reading  # type: ignore[return-value]


class SQLiteBackend(LogBackend):
    """The log in one SQLite file (or in memory, for `sqlite://:memory:`)."""

    def __init__(self, path: str, *, durability: str = "full", read_only: bool = False) -> None:
        self.path = path
        self._durability = durability
        # Read-only: no write connection, and the others opened so that they never write
        # (eventstore.log.backends.sqlite.files): no pragma that writes, no migration.
        self.read_only = read_only
        # Writes: used by the loop thread and, for BEGIN and COMMIT, by one worker thread, never
        # both at once (the write lock serialises transactions, the limiter the thread hops).
        self._write_conn: sqlite3.Connection | None = None
        # Point reads, on the loop thread.
        self._point_conn: sqlite3.Connection | None = None
        # Long reads, in aiosqlite's thread.
        self._read_conn: aiosqlite.Connection | None = None
        # fast_acquire: an uncontended lock is taken without a trip through the event loop,
        # which under load costs a whole loop iteration of every batch.
        self._write_lock = anyio.Lock(fast_acquire=True)
        # One step in a worker thread at a time, so steps never share the connection.
        self._limiter = anyio.CapacityLimiter(1)
        self._commit_seconds = 0.0  # how long COMMIT takes, on average (see _commit)
        self._closed = False

    @property
    def in_memory(self) -> bool:
        return self.path == ":memory:"

    async def open(self) -> None:
        if self.read_only:
            await self._open_read_only()
            return
        if not self.in_memory:
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise translate_os(error, self.path) from error
        try:
            await self._open()
        except sqlite3.Error as error:
            raise translate(error, self.path) from error

    async def _open_read_only(self) -> None:
        if self.in_memory:
            raise ConfigError(
                "an in-memory SQLite store cannot be opened read-only: it would start empty"
            )
        try:
            self._point_conn = await self._in_thread(self._connect_read_only)
            self._check_schema(self._point_conn)
            self._read_conn = await aiosqlite.Connection(self._connect_read_only, 64)
        except BaseException as error:
            with anyio.CancelScope(shield=True):
                await self.aclose()
            if isinstance(error, sqlite3.Error):
                raise translate(error, self.path) from error
            raise

    def _connect_read_only(self) -> sqlite3.Connection:
        return connect_read_only(self.path, busy_timeout_ms=_BUSY_TIMEOUT_MS)

    def _check_schema(self, conn: sqlite3.Connection) -> None:
        """Read-only, the schema cannot be migrated: it must be the one this code writes."""
        found = conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
        ).fetchall()
        if not found:
            raise StorageError(
                f"SQLite file {self.path} holds no tasktrail log; check the path (--db)",
                where=self.path,
                cause="missing",
            )
        rows = conn.execute("SELECT version FROM schema_version").fetchall()
        version = rows[0][0] if rows else 0
        if pending_migrations(version, MIGRATIONS, f"SQLite file {self.path}"):
            raise ReadOnlyStoreError(
                f"SQLite file {self.path}",
                f"has schema version {version}, made by an older tasktrail; this one reads "
                f"version {SCHEMA_VERSION}, and migrating it writes",
                "open it once without read_only (where it can be written) to migrate it",
            )

    async def _open(self) -> None:
        try:
            # Opening may wait for another process's lock (WAL switch, migration): not on the loop.
            write_conn = self._write_conn = await self._in_thread(self._connect)
            await self._in_thread(self._migrate, write_conn)
            write_conn.execute("PRAGMA busy_timeout = 0")  # see _begin
            write_conn.execute(f"PRAGMA wal_autocheckpoint = {_CHECKPOINT_PAGES}")
            if self.in_memory:
                # An in-memory database lives in its one connection, so reads share it.
                self._point_conn = write_conn
                self._read_conn = await aiosqlite.Connection(lambda: write_conn, 64)
            else:
                self._point_conn = await self._in_thread(self._connect)
                self._read_conn = await aiosqlite.Connection(self._connect, 64)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.aclose()
            raise

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            # Compaction gives space back in small steps (PRAGMA incremental_vacuum). This only
            # takes effect on a new file; an older file is converted by one full VACUUM, at
            # its first compaction that frees pages (see reclaim_space).
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
            # Every deleted or replaced row is overwritten with zeros in its page, and every
            # freed page before it joins the free list, on every build (SQLite's upstream
            # default is OFF, Debian's ON). Only for some transactions is not enough: a page
            # split or merge made while it is OFF leaves copies of the rows it moved in the
            # page's free space, which no later erasure can find. An erasure relies on it.
            conn.execute("PRAGMA secure_delete = ON")
            if not self.in_memory:
                conn.execute("PRAGMA journal_mode = WAL")
            synchronous = "FULL" if self._durability == "full" else "NORMAL"
            conn.execute(f"PRAGMA synchronous = {synchronous}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        # BEGIN IMMEDIATE takes the write lock first, so two processes opening the same old file
        # cannot both migrate it; the second sees the version the first stamped.
        conn.execute("BEGIN IMMEDIATE")
        try:
            found = conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
            ).fetchall()
            version = 0
            if found:
                rows = conn.execute("SELECT version FROM schema_version").fetchall()
                version = rows[0][0] if rows else 0
            steps = pending_migrations(version, MIGRATIONS, f"SQLite file {self.path}")
            for step in steps:
                for statement in step.statements:
                    conn.execute(statement)
            if steps:
                conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        # anyio's worker threads, not a concurrent.futures executor: those refuse work once the
        # interpreter starts shutting down, and a store closed from an atexit handler (as the
        # Airflow backend's is) must still close its connections then.
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    def _writer(self) -> sqlite3.Connection:
        conn = self._write_conn
        if conn is None:
            if self.read_only:
                raise ReadOnlyStoreError(
                    f"SQLite file {self.path}",
                    "is open read-only: nothing was written",
                    "open it without read_only (StoreConfig(read_only=False), no --read-only) "
                    "to write",
                )
            raise StoreClosedError("SQLite log")
        return conn

    async def _begin(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as error:
            if error.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
                raise
        # Another process is writing: wait for its lock, off the loop.
        await self._in_thread(_begin_waiting, conn)

    async def _run_writer(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(write connection)` in the worker thread, between transactions.

        For maintenance that may take long or wait for locks (VACUUM, a WAL checkpoint): it
        holds the write lock, so no batch runs meanwhile, and waits up to the busy timeout for
        other processes, as BEGIN does.
        """
        async with self._write_lock:
            conn = self._writer()

            def run() -> T:
                conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
                try:
                    return fn(conn)
                finally:
                    conn.execute("PRAGMA busy_timeout = 0")

            try:
                return await self._in_thread(run)
            except sqlite3.Error as error:
                raise translate(error, self.path) from error

    @asynccontextmanager
    async def compaction_lock(self) -> AsyncIterator[None]:
        """An exclusive `flock` on PATH.compact.lock beside the database, held for the whole
        compaction, so processes compacting the same file take turns without ever blocking a
        writer (SQLite's own lock is only held for each short transaction).

        flock, not fcntl's record locks: those belong to the process, so a second backend of
        the same process would take them too; a flock belongs to the open file. The kernel
        drops it when the process dies, so a crashed compactor leaves nothing to clean up.
        The file itself stays: removing it would race a process that has just opened it.
        """
        if self.in_memory:
            async with super().compaction_lock():
                yield
            return
        self._writer()  # read-only: compaction writes
        path = f"{self.path}.compact.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise CompactionRunningError(f"SQLite file {self.path}") from None
            yield
        finally:
            os.close(fd)  # closing the last descriptor of the file releases the flock

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[None]:
        if not self.read_only:
            async with super().snapshot():
                yield
            return
        # Read-only: one read transaction of the long-reads connection, which every read of
        # verify goes through, sees one state of the file whatever other processes commit.
        reader = self._reader()
        await reader.execute("BEGIN")
        try:
            yield
        finally:
            with anyio.CancelScope(shield=True):
                await reader.execute("COMMIT")

    def _reader(self) -> aiosqlite.Connection:
        if self._read_conn is None:
            raise StoreClosedError("SQLite log")
        return self._read_conn

    def _points(self) -> sqlite3.Connection:
        if self._point_conn is None:
            raise StoreClosedError("SQLite log")
        return self._point_conn

    @asynccontextmanager
    async def write(self) -> AsyncIterator[WriteTransaction]:
        async with self._write_lock:
            conn = self._writer()
            try:
                await self._begin(conn)
            except sqlite3.Error as error:
                raise translate(error, self.path) from error
            except BaseException:
                # Cancelled while BEGIN ran in its thread: it may have begun all the same.
                _rollback(conn)
                raise
            tx = _SQLiteTransaction(conn, self._in_thread)
            try:
                yield tx
            except sqlite3.Error as error:
                _rollback(conn)
                raise translate(error, self.path) from error
            except BaseException:
                _rollback(conn)
                raise
            try:
                # The fsync. Once it has started, it finishes: the caller must not be told a
                # write failed when it landed.
                with anyio.CancelScope(shield=True):
                    await self._commit(conn, big=tx.rows > _INLINE_COMMIT_ROWS)
            except sqlite3.Error as error:
                _rollback(conn)
                raise translate(error, self.path) from error

    async def _commit(self, conn: sqlite3.Connection, *, big: bool = False) -> None:
        if self._commit_seconds < _INLINE_COMMIT_SECONDS and not big:
            took = _timed_commit(conn)
        else:
            took = await self._in_thread(_timed_commit, conn)
        # A moving average over about the last eight commits.
        self._commit_seconds += (took - self._commit_seconds) / 8

    @_translated
    async def select_scope(self, scope_key: str) -> ScopeRow | None:
        row = self._points().execute(_SELECT_SCOPE, (scope_key,)).fetchone()
        return None if row is None else _scope_row(row)

    @_translated
    async def select_current(self, scope_id: int, key: str) -> CurrentRow | None:
        row = self._points().execute(_SELECT_CURRENT, (scope_id, key)).fetchone()
        return None if row is None else CurrentRow(*row)

    @_translated
    async def select_current_all(self, scope_id: int) -> list[CurrentRow]:
        rows = self._points().execute(_SELECT_CURRENT_ALL, (scope_id,)).fetchall()
        return [CurrentRow(*r) for r in rows]

    @_translated
    async def select_current_page(
        self, scope_id: int, *, after: str | None, limit: int, now: int
    ) -> list[CurrentRow]:
        rows = self._points().execute(_SELECT_CURRENT_PAGE, (scope_id, after or "", now, limit))
        return [CurrentRow(*r) for r in rows]

    @_translated
    async def select_events(self, scope_id: int, where: EventFilter) -> list[EventRow]:
        sql, params = _events_query(scope_id, where)
        rows = await self._reader().execute_fetchall(sql, params)
        return [EventRow(*r) for r in rows]

    @_translated
    async def select_last_scope_event(
        self, scope_id: int, kind: str, *, through_seq: int | None = None
    ) -> EventRow | None:
        bound = _NO_BOUND if through_seq is None else through_seq
        rows = await self._reader().execute_fetchall(
            _SELECT_LAST_SCOPE_EVENT, (scope_id, kind, bound)
        )
        return next((EventRow(*r) for r in rows), None)

    @_translated
    async def select_latest_per_key(
        self, scope_id: int, *, after_seq: int, through_seq: int
    ) -> list[EventRow]:
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
            try:
                rows = list(await reader.execute_fetchall(_SELECT_ALL_EVENTS, (after_seq, batch)))
            except sqlite3.Error as error:
                raise translate(error, self.path) from error
            for r in rows:
                yield EventRow(*r)
            if len(rows) < batch:
                return
            after_seq = rows[-1][0]

    @_translated
    async def select_erased_through(self, scope_ids: Collection[int]) -> dict[int, int]:
        rows = await self._reader().execute_fetchall(
            _SELECT_ERASED_THROUGH, (_encode_json(sorted(scope_ids)).decode(),)
        )
        return {int(r[0]): int(r[1]) for r in rows}

    @_translated
    async def select_last_seq(self) -> int:
        rows = await self._reader().execute_fetchall(_SELECT_LAST_SEQ)
        return int(next(iter(rows))[0])

    @_translated
    async def select_all_scopes(self) -> list[ScopeRow]:
        rows = await self._reader().execute_fetchall(f"SELECT {_SCOPE_COLUMNS} FROM scopes")
        return [_scope_row(r) for r in rows]

    @_translated
    async def select_scopes_page(self, where: ScopeFilter) -> list[ScopeRow]:
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
            "limit": where.limit,
        }
        rows = await self._reader().execute_fetchall(_SELECT_SCOPES_PAGE, params)
        return [_scope_row(r) for r in rows]

    @_translated
    async def select_all_current(self) -> list[CurrentRow]:
        rows = await self._reader().execute_fetchall(f"SELECT {_CURRENT_COLUMNS} FROM current")
        return [CurrentRow(*r) for r in rows]

    @_translated
    async def count_idempotent(self, *, recorded_before: int) -> int:
        rows = await self._reader().execute_fetchall(_COUNT_IDEMPOTENT, (recorded_before,))
        return int(next(iter(rows))[0])

    @_translated
    async def select_storage_bytes(self) -> int:
        if self.in_memory:
            return int(self._points().execute(_SELECT_PAGE_BYTES).fetchone()[0])
        total = 0
        for suffix in ("", "-wal"):
            path = anyio.Path(self.path + suffix)
            if await path.exists():
                total += (await path.stat()).st_size
        return total

    async def reclaim_space(self, max_pages: int) -> int:
        return await self._run_writer(partial(_reclaim_step, max_pages=max_pages))

    async def checkpoint(self) -> None:
        if not self.in_memory and not self.read_only:
            # TRUNCATE waits for no reader: pages a reader still needs stay in the WAL, and
            # the next checkpoint takes them.
            await self._run_writer(_checkpoint)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        reader, self._read_conn = self._read_conn, None
        points, self._point_conn = self._point_conn, None
        writer, self._write_conn = self._write_conn, None
        with anyio.CancelScope(shield=True):
            if reader is not None:
                await reader.close()
            # The write lock: a transaction in flight finishes before its connection closes.
            async with self._write_lock:
                for conn in {id(c): c for c in (points, writer) if c is not None}.values():
                    # The last connection to close checkpoints the WAL into the file.
                    await self._in_thread(conn.close)


class _SQLiteTransaction(WriteTransaction):
    """The statements of one write transaction, run on the loop thread (see the module doc)."""

    __slots__ = ("conn", "in_thread", "rows")

    def __init__(self, conn: sqlite3.Connection, in_thread: Callable[..., Awaitable[Any]]) -> None:
        self.conn = conn
        self.in_thread = in_thread
        self.rows = 0  # rows written or removed, for the choice of where to commit

    async def _many(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        """executemany: on the loop thread for the few rows of a usual batch; the slices of a
        big one in the worker thread, where the page cache spilling to the WAL (file I/O) does
        not stop the loop."""
        if len(rows) <= _INLINE_ROWS:
            self.conn.executemany(sql, rows)
        else:
            await self.in_thread(self.conn.executemany, sql, rows)

    async def select_head(self) -> LogHead:
        row = self.conn.execute("SELECT last_seq, last_recorded_at FROM log_head").fetchone()
        return LogHead(last_seq=row[0], last_recorded_at=row[1])

    async def select_scopes(self, scope_keys: Collection[str]) -> dict[str, ScopeRow]:
        if not scope_keys:
            return {}
        rows = self.conn.execute(_SELECT_SCOPES, (_json_array(scope_keys),)).fetchall()
        return {r[1]: _scope_row(r) for r in rows}

    async def select_task_scopes(self, dag_id: str, run_id: str, task_id: str) -> list[ScopeRow]:
        rows = self.conn.execute(_SELECT_TASK_SCOPES, (dag_id, run_id, task_id)).fetchall()
        return [_scope_row(r) for r in rows]

    async def select_live_keys(self, scope_id: int, now: int) -> set[str]:
        return {r[0] for r in self.conn.execute(_SELECT_LIVE_KEYS, (scope_id, now))}

    async def select_current_heads(self, scope_id: int, keys: Collection[str]) -> dict[str, bytes]:
        if not keys:
            return {}
        if len(keys) == 1:  # the usual write of one key: a plain seek, no JSON array
            [key] = keys
            row = self.conn.execute(_SELECT_CURRENT_HEAD, (scope_id, key)).fetchone()
            return {} if row is None else {key: row[0]}
        params = (scope_id, _json_array(keys))
        if len(keys) <= _INLINE_ROWS:
            rows = self.conn.execute(_SELECT_CURRENT_HEADS, params).fetchall()
        else:
            rows = await self.in_thread(
                lambda: self.conn.execute(_SELECT_CURRENT_HEADS, params).fetchall()
            )
        return {r[0]: r[1] for r in rows}

    async def select_idempotent(
        self, keys: Collection[tuple[int, str]]
    ) -> dict[tuple[int, str], bytes]:
        if not keys:
            return {}
        rows = self.conn.execute(_SELECT_IDEMPOTENT, (_encode_json(list(keys)).decode(),))
        return {(r[0], r[1]): r[2] for r in rows}

    async def insert_scope(self, row: ScopeRow) -> int:
        found = self.conn.execute(
            _INSERT_SCOPE,
            (
                row.scope_key,
                row.version,
                row.max_try,
                row.updated_at,
                row.dag_id,
                row.run_id,
                row.task_id,
                row.map_index,
            ),
        ).fetchone()
        return int(found[0])

    async def insert_events(self, rows: Sequence[EventRow]) -> None:
        self.rows += len(rows)
        await self._many(_INSERT_EVENT, [astuple(r) for r in rows])

    async def upsert_current(self, rows: Sequence[CurrentRow]) -> None:
        self.rows += len(rows)
        await self._many(_UPSERT_CURRENT, [astuple(r) for r in rows])

    async def delete_current(self, pairs: Sequence[tuple[int, str]]) -> None:
        await self._many("DELETE FROM current WHERE scope_id = ? AND key = ?", pairs)

    async def clear_current(self, scope_ids: Sequence[int]) -> None:
        self.conn.executemany("DELETE FROM current WHERE scope_id = ?", [(s,) for s in scope_ids])

    async def update_scopes(self, rows: Sequence[ScopeRow]) -> None:
        self.conn.executemany(
            _UPDATE_SCOPE, [(r.version, r.max_try, r.updated_at, r.scope_id) for r in rows]
        )

    async def insert_idempotent(self, rows: Sequence[IdempotentRow]) -> None:
        self.conn.executemany(_INSERT_IDEMPOTENT, map(astuple, rows))

    async def delete_idempotent(self, *, recorded_before: int, limit: int) -> int:
        return self.conn.execute(_DELETE_IDEMPOTENT, (recorded_before, limit)).rowcount

    async def update_head(self, head: LogHead) -> None:
        self.conn.execute(
            "UPDATE log_head SET last_seq = ?, last_recorded_at = ?",
            (head.last_seq, head.last_recorded_at),
        )

    async def replace_current(self, rows: Sequence[CurrentRow]) -> None:
        self.conn.execute("DELETE FROM current")
        await self.upsert_current(rows)

    # Compaction's and erasure's statements go through _many and count as rows too: their
    # slices are big, and run on the loop thread they kept it (and every writer) waiting.
    async def delete_events(self, seqs: Sequence[int]) -> int:
        self.rows += len(seqs)
        before = self.conn.total_changes
        await self._many("DELETE FROM events WHERE seq = ?", [(s,) for s in seqs])
        return self.conn.total_changes - before

    async def delete_current_at(self, rows: Sequence[tuple[int, str, int]]) -> None:
        self.rows += len(rows)
        await self._many("DELETE FROM current WHERE scope_id = ? AND key = ? AND seq = ?", rows)

    async def update_event_payloads(self, rows: Sequence[tuple[int, bytes]]) -> None:
        # The bytes replaced (a plain value) are overwritten: see secure_delete in _connect.
        self.rows += len(rows)
        await self._many(
            "UPDATE events SET payload = ? WHERE seq = ?", [(p, seq) for seq, p in rows]
        )

    async def update_current_values(self, rows: Sequence[tuple[bytes, int, str, int]]) -> None:
        self.rows += len(rows)
        await self._many(_UPDATE_CURRENT_VALUE, rows)


_AUTO_VACUUM_NONE: Final = 0
_AUTO_VACUUM_INCREMENTAL: Final = 2
_SELECT_PAGE_BYTES: Final = (
    "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()"
)


def _reclaim_step(conn: sqlite3.Connection, *, max_pages: int) -> int:
    """One step of giving free pages back; returns the free pages left (0 when done)."""
    free = _pragma_int(conn, "freelist_count")
    if free == 0:
        return 0
    mode = _pragma_int(conn, "auto_vacuum")
    if mode == _AUTO_VACUUM_NONE:
        # A file made before incremental vacuum was switched on: one full VACUUM converts it.
        # It holds the write lock for as long as it takes, once.
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        conn.execute("VACUUM")
        return 0
    if mode != _AUTO_VACUUM_INCREMENTAL:
        return 0  # FULL gives pages back at every commit already
    # executescript steps the pragma to completion (a plain execute frees one page), and the
    # pragma takes no bound parameters: the count is an int we made.
    try:
        conn.executescript(f"BEGIN IMMEDIATE; PRAGMA incremental_vacuum({int(max_pages)}); COMMIT;")
    except BaseException:
        _rollback(conn)
        raise
    return _pragma_int(conn, "freelist_count")


def _checkpoint(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()


def _pragma_int(conn: sqlite3.Connection, name: str) -> int:
    return int(conn.execute(f"PRAGMA {name}").fetchone()[0])  # name: one of our constants


def _timed_commit(conn: sqlite3.Connection) -> float:
    started = time.perf_counter()
    conn.execute("COMMIT")
    return time.perf_counter() - started


def _begin_waiting(conn: sqlite3.Connection) -> None:
    conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
    try:
        conn.execute("BEGIN IMMEDIATE")
    finally:
        conn.execute("PRAGMA busy_timeout = 0")


def _rollback(conn: sqlite3.Connection) -> None:
    # Undoing an uncommitted WAL transaction writes nothing to disk: fine on the loop thread.
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def _json_array(items: Collection[str]) -> str:
    # Text, not bytes: SQLite would read a BLOB argument of json_each as binary JSONB.
    return _encode_json(list(items)).decode()


def _scope_row(r: Any) -> ScopeRow:
    # The columns are selected in the order of ScopeRow's fields (_SCOPE_COLUMNS).
    return ScopeRow(*r)


def _events_query(scope_id: int, where: EventFilter) -> tuple[str, list[Any]]:
    clauses = ["scope_id = ?"]
    params: list[Any] = [scope_id]
    if where.key is not None:
        clauses.append("key = ?")
        params.append(where.key)
    if where.kinds is not None:
        clauses.append(f"kind IN ({', '.join('?' for _ in where.kinds)})")
        params.extend(sorted(where.kinds))
    if where.try_number is not None:
        clauses.append("try_number = ?")
        params.append(where.try_number)
    if where.since is not None:
        clauses.append("recorded_at >= ?")
        params.append(where.since)
    if where.until is not None:
        clauses.append("recorded_at <= ?")
        params.append(where.until)
    if where.after_seq is not None:
        # The next page after an event of this scope starts past that event's version too:
        # the (scope_id, version) index then seeks straight to it rather than walking the
        # scope's earlier events (a cursor from elsewhere bounds by seq alone).
        clauses.append(
            "seq > ? AND version > COALESCE("
            "(SELECT e.version FROM events AS e WHERE e.seq = ? AND e.scope_id = ?), 0)"
        )
        params.extend((where.after_seq, where.after_seq, scope_id))
    if where.through_seq is not None:
        clauses.append("seq <= ?")
        params.append(where.through_seq)
    if where.through_version is not None:
        clauses.append("version <= ?")
        params.append(where.through_version)
    # Within one scope, ordering by version, or by (recorded_at, seq), is ordering by seq: both
    # grow with positions. Each filter orders by what its index holds, so the index yields rows
    # already in order and a LIMIT 1 (history finding where a point lands) is one seek, not a
    # sort of the whole scope. An index on (scope_id, x) holds the rowid, seq, after x.
    order = "DESC" if where.descending else "ASC"
    if where.key is not None or where.try_number is not None:
        ordering = f"seq {order}"
    elif where.since is not None or where.until is not None:
        ordering = f"recorded_at {order}, seq {order}"
    else:
        ordering = f"version {order}"
    sql = f"SELECT {_EVENT_COLUMNS} FROM events WHERE {' AND '.join(clauses)} ORDER BY {ordering}"
    if where.limit is not None:
        sql += " LIMIT ?"
        params.append(where.limit)
    return sql, params
