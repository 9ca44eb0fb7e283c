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

A writer keeps the heads it read and wrote (the log head, scope rows, value heads, try starts:
`kept_heads.WriterHeads`) from one transaction to the next, and plans from them while they are
the file's: `PRAGMA data_version`, asked right after BEGIN IMMEDIATE (under the write lock),
changes exactly when another connection, of this process or another, committed to the file
since, and never for the write connection's own commits. When it moved, or the last transaction
did not commit, the heads are read again.

COMMIT (the fsync) runs on the loop thread too while commits are quick, and in the worker
thread once they are not (`_commit`): on a busy machine, waking a thread for the commit and
waking the loop again afterwards took longer than a quick fsync, and a batch's writers waited for
both; a slow disk must not stop the loop, so commits slower than `_INLINE_COMMIT_SECONDS` on
average go to the thread.

Reads are in `reads`, the statements of a write transaction in `transaction`, the schema
and its migrations in `schema`, connections and their settings in `pragmas`, and the one
translation of SQLite's errors in `files.Translating`.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any, Final, TypeVar

import aiosqlite
import anyio
import anyio.to_thread

from eventstore.log.backends.base import WriteTransaction
from eventstore.log.backends.kept_heads import WriterHeads
from eventstore.log.backends.migrations import pending_migrations, require_current
from eventstore.log.backends.sqlite.files import Translating, connect_read_only, translate_os
from eventstore.log.backends.sqlite.pragmas import (
    BUSY_TIMEOUT_MS,
    CHECKPOINT_PAGES,
    begin_waiting,
    checkpoint,
    connect,
    pragma_int,
    reclaim_step,
    rollback,
    schema_version,
    timed_commit,
)
from eventstore.log.backends.sqlite.reads import SQLiteReads
from eventstore.log.backends.sqlite.schema import MIGRATIONS, SCHEMA_VERSION
from eventstore.log.backends.sqlite.transaction import SQLiteTransaction
from eventstore.log.errors import (
    CompactionRunningError,
    ConfigError,
    ReadOnlyStoreError,
    StoreClosedError,
)

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "SQLiteBackend"]

T = TypeVar("T")

# COMMITs quicker than this on average run on the loop thread; slower ones in the worker thread.
_INLINE_COMMIT_SECONDS: Final = 0.005
# A transaction that wrote more rows than this commits in the worker thread whatever the
# average: its pages go to the WAL at COMMIT, which takes longer than a request may hold the loop.
_INLINE_COMMIT_ROWS: Final = 1000


class SQLiteBackend(SQLiteReads):
    """The log in one SQLite file (or in memory, for `sqlite://:memory:`)."""

    def __init__(self, path: str, *, durability: str = "full", read_only: bool = False) -> None:
        self.path = path
        self._errors = Translating(path)
        self._durability = durability
        # Read-only: no write connection, and the others opened so that they never write
        # (eventstore.log.backends.sqlite.files): no pragma that writes, no migration.
        self.read_only = read_only
        # Writes: used by the loop thread and, for BEGIN and COMMIT, by one worker thread, never
        # both at once (the write lock serialises transactions, the limiter the thread hops).
        self._write_conn: sqlite3.Connection | None = None
        # Point reads, on the loop thread.
        self._point_conn: sqlite3.Connection | None = None
        self._value_cursor: sqlite3.Cursor | None = None
        # Long reads, in aiosqlite's thread.
        self._read_conn: aiosqlite.Connection | None = None
        # fast_acquire: an uncontended lock is taken without a trip through the event loop,
        # which under load costs a whole loop iteration of every batch.
        self._write_lock = anyio.Lock(fast_acquire=True)
        # One step in a worker thread at a time, so steps never share the connection.
        self._limiter = anyio.CapacityLimiter(1)
        self._commit_seconds = 0.0  # how long COMMIT takes, on average (see _commit)
        # The writer's heads as its last committed transaction left them (None: not known), and
        # the write connection's data_version then.
        self._kept: WriterHeads | None = None
        self._data_version = -1
        self._closed = False

    async def open(self) -> None:
        try:  # whatever was opened before a failure is closed again
            if self.read_only:
                await self._open_read_only()
                return
            if not self.in_memory:
                try:
                    Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                except OSError as error:
                    raise translate_os(error, self.path) from error
            with self._errors:
                await self._open()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.aclose()
            raise

    async def _open_read_only(self) -> None:
        if self.in_memory:
            raise ConfigError(
                "an in-memory SQLite store cannot be opened read-only: it would start empty"
            )
        with self._errors:
            self._point_conn = await self._in_thread(self._connect_read_only)
            self._check_schema(self._point_conn)
            self._read_conn = await aiosqlite.Connection(self._connect_read_only, 64)

    def _connect_read_only(self) -> sqlite3.Connection:
        return connect_read_only(self.path, busy_timeout_ms=BUSY_TIMEOUT_MS)

    def _check_schema(self, conn: sqlite3.Connection) -> None:
        """Read-only, the schema cannot be migrated: it must be the one this code writes."""
        require_current(
            schema_version(conn),
            MIGRATIONS,
            f"SQLite file {self.path}",
            "open it once without read_only (where it can be written) to migrate it",
        )

    async def _open(self) -> None:
        # Opening may wait for another process's lock (WAL switch, migration): not on the loop.
        write_conn = self._write_conn = await self._in_thread(self._connect)
        await self._in_thread(self._migrate, write_conn)
        write_conn.execute("PRAGMA busy_timeout = 0")  # see _begin
        write_conn.execute(f"PRAGMA wal_autocheckpoint = {CHECKPOINT_PAGES}")
        if self.in_memory:
            # An in-memory database lives in its one connection, so reads share it.
            self._point_conn = write_conn
            self._read_conn = await aiosqlite.Connection(lambda: write_conn, 64)
        else:
            self._point_conn = await self._in_thread(self._connect)
            self._read_conn = await aiosqlite.Connection(self._connect, 64)

    def _connect(self) -> sqlite3.Connection:
        return connect(self.path, durability=self._durability)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        # BEGIN IMMEDIATE takes the write lock first, so two processes opening the same old file
        # cannot both migrate it; the second sees the version the first stamped.
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = schema_version(conn)
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
        await self._in_thread(begin_waiting, conn)

    async def _run_writer(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(write connection)` in the worker thread, between transactions.

        For maintenance that may take long or wait for locks (VACUUM, a WAL checkpoint): it
        holds the write lock, so no batch runs meanwhile, and waits up to the busy timeout for
        other processes, as BEGIN does.
        """
        async with self._write_lock:
            conn = self._writer()

            def run() -> T:
                conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                try:
                    return fn(conn)
                finally:
                    conn.execute("PRAGMA busy_timeout = 0")

            with self._errors:
                return await self._in_thread(run)

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
    async def read_only_snapshot(self) -> AsyncIterator[None]:
        # One read transaction of the long-reads connection, which every read of
        # verify goes through, sees one state of the file whatever other processes commit.
        reader = self._reader()
        await reader.execute("BEGIN")
        try:
            yield
        finally:
            with anyio.CancelScope(shield=True):
                await reader.execute("COMMIT")

    @asynccontextmanager
    async def write(self) -> AsyncIterator[WriteTransaction]:
        async with self._write_lock:
            conn = self._writer()
            with self._errors:
                try:
                    await self._begin(conn)
                    tx = SQLiteTransaction(conn, self._in_thread, self._kept_heads(conn))
                    yield tx
                    # The fsync. Once it has started, it finishes: the caller must not be told
                    # a write failed when it landed.
                    with anyio.CancelScope(shield=True):
                        await self._commit(conn, big=tx.rows > _INLINE_COMMIT_ROWS)
                except BaseException:
                    # What the transaction kept of the heads is not what the file holds.
                    self._kept = None
                    # Also when cancelled while BEGIN ran in its thread: it may have begun.
                    rollback(conn)
                    raise

    def _kept_heads(self, conn: sqlite3.Connection) -> WriterHeads:
        """The heads kept since the last transaction, if no other connection has committed to
        the file since; else an empty start. Called under the write lock, right after BEGIN."""
        version = pragma_int(conn, "data_version")
        kept = self._kept
        if kept is None or version != self._data_version:
            kept = self._kept = WriterHeads()
            self._data_version = version
        return kept

    async def _commit(self, conn: sqlite3.Connection, *, big: bool = False) -> None:
        if self._commit_seconds < _INLINE_COMMIT_SECONDS and not big:
            took = timed_commit(conn)
        else:
            took = await self._in_thread(timed_commit, conn)
        # A moving average over about the last eight commits.
        self._commit_seconds += (took - self._commit_seconds) / 8

    async def reclaim_space(self, max_pages: int) -> int:
        return await self._run_writer(partial(reclaim_step, max_pages=max_pages))

    async def checkpoint(self) -> None:
        if not self.in_memory and not self.read_only:
            # TRUNCATE waits for no reader: pages a reader still needs stay in the WAL, and
            # the next checkpoint takes them.
            await self._run_writer(checkpoint)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        reader, self._read_conn = self._read_conn, None
        points, self._point_conn = self._point_conn, None
        self._value_cursor = None
        writer, self._write_conn = self._write_conn, None
        with anyio.CancelScope(shield=True):
            if reader is not None:
                await reader.close()
            # The write lock: a transaction in flight finishes before its connection closes.
            async with self._write_lock:
                for conn in {id(c): c for c in (points, writer) if c is not None}.values():
                    # The last connection to close checkpoints the WAL into the file.
                    await self._in_thread(conn.close)
