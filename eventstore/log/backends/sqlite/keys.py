"""The SQLite key store: the wrapped data keys in a SQLite file beside the log (or in memory).

The sqlite3 calls block (a commit syncs the file, a writer of another process holds the lock): each
runs in a worker thread, so the caller's event loop goes on meanwhile.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

import anyio

from eventstore.log.backends.sqlite.files import connect_read_only, translate, translate_os
from eventstore.log.errors import ReadOnlyStoreError
from eventstore.log.keystore import DataKeyRow, KeyStore, MakeKey

T = TypeVar("T")

_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS master_checks (
        key_id TEXT PRIMARY KEY,
        sealed BLOB NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS data_keys (
        scope_key TEXT NOT NULL,
        generation INTEGER NOT NULL,
        master_id TEXT NOT NULL,
        wrapped BLOB NOT NULL,
        PRIMARY KEY (scope_key, generation)
    )""",
    """CREATE TABLE IF NOT EXISTS erased (
        scope_key TEXT PRIMARY KEY,
        through_generation INTEGER NOT NULL
    )""",
)


class SQLiteKeyStore(KeyStore):
    """The key store in a SQLite file of its own (or in memory), in WAL mode, synced on commit.

    One connection under a lock; writers of other processes wait for SQLite's write lock.
    """

    def __init__(self, path: str, *, read_only: bool = False) -> None:
        self.location = path
        self.read_only = read_only
        self._lock = threading.Lock()
        self._seen = 0
        if read_only:
            # Opened without writing anything (see files.connect_read_only): no schema made.
            self._conn = connect_read_only(path, busy_timeout_ms=10_000)
            return
        try:
            if path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except OSError as error:
            raise translate_os(error, path) from error
        try:
            self._conn.execute("PRAGMA busy_timeout = 10000")
            # A destroyed data key must leave no bytes behind, on every build (SQLite's
            # upstream default is OFF): deleted rows are zeroed in their page, freed pages
            # zeroed, and rows a page split moves leave no copy in the page's free space.
            self._conn.execute("PRAGMA secure_delete = ON")
            if path != ":memory:":
                self._conn.execute("PRAGMA journal_mode = WAL")
                self._conn.execute("PRAGMA synchronous = FULL")
            self._write_now(lambda conn: [conn.execute(statement) for statement in _SCHEMA])
        except sqlite3.Error as error:
            self._conn.close()
            raise translate(error, path) from error
        except BaseException:
            self._conn.close()
            raise

    async def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        return await anyio.to_thread.run_sync(self._write_now, work)

    async def _read(self, sql: str, params: Sequence[object] = ()) -> list[Any]:
        return await anyio.to_thread.run_sync(self._read_now, sql, params)

    def _write_now(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self.read_only:
            raise ReadOnlyStoreError(
                f"the key store {self.location}",
                "is open read-only: nothing was written",
                "open the store without read_only to write",
            )
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    result = work(self._conn)
                    self._conn.execute("COMMIT")
                except BaseException:
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as error:
                raise translate(error, self.location) from error
            self._seen = self._data_version()
            return result

    def _read_now(self, sql: str, params: Sequence[object] = ()) -> list[Any]:
        with self._lock:
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.Error as error:
                raise translate(error, self.location) from error

    async def checks(self) -> dict[str, bytes]:
        return {
            str(k): bytes(s)
            for k, s in await self._read("SELECT key_id, sealed FROM master_checks")
        }

    async def add_check(self, key_id: str, sealed: bytes) -> None:
        await self._write(
            lambda conn: conn.execute(
                "INSERT INTO master_checks (key_id, sealed) VALUES (?, ?) "
                "ON CONFLICT (key_id) DO NOTHING",
                (key_id, sealed),
            )
        )

    async def master_ids(self) -> set[str]:
        return {str(r[0]) for r in await self._read("SELECT DISTINCT master_id FROM data_keys")}

    async def current_keys(self, scope_keys: Sequence[str], make: MakeKey) -> list[DataKeyRow]:
        def work(conn: sqlite3.Connection) -> list[DataKeyRow]:
            found: list[DataKeyRow] = []
            for scope_key in scope_keys:
                row = conn.execute(
                    "SELECT generation, master_id, wrapped FROM data_keys WHERE scope_key = ? "
                    "ORDER BY generation DESC LIMIT 1",
                    (scope_key,),
                ).fetchone()
                if row is None:
                    erased = conn.execute(
                        "SELECT through_generation FROM erased WHERE scope_key = ?", (scope_key,)
                    ).fetchone()
                    generation = (erased[0] if erased else 0) + 1
                    master_id, wrapped = make(scope_key, generation)
                    conn.execute(
                        "INSERT INTO data_keys (scope_key, generation, master_id, wrapped) "
                        "VALUES (?, ?, ?, ?)",
                        (scope_key, generation, master_id, wrapped),
                    )
                    row = (generation, master_id, wrapped)
                found.append((scope_key, int(row[0]), str(row[1]), bytes(row[2])))
            return found

        return await self._write(work)

    async def data_keys(self, scope_key: str) -> tuple[list[DataKeyRow], int]:
        rows = await self._read(
            "SELECT generation, master_id, wrapped FROM data_keys WHERE scope_key = ?",
            (scope_key,),
        )
        erased = await self._read(
            "SELECT through_generation FROM erased WHERE scope_key = ?", (scope_key,)
        )
        keys = [(scope_key, int(g), str(m), bytes(w)) for g, m, w in rows]
        return keys, int(erased[0][0]) if erased else 0

    async def destroy(self, scope_key: str) -> int:
        def work(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "SELECT MAX(generation) FROM data_keys WHERE scope_key = ?", (scope_key,)
            ).fetchone()
            through = int(row[0] or 0)
            # Zeros over the wrapped key first, then the row (secure_delete zeroes it too).
            conn.execute(
                "UPDATE data_keys SET wrapped = zeroblob(length(wrapped)) WHERE scope_key = ?",
                (scope_key,),
            )
            conn.execute("DELETE FROM data_keys WHERE scope_key = ?", (scope_key,))
            conn.execute(
                "INSERT INTO erased (scope_key, through_generation) VALUES (?, ?) "
                "ON CONFLICT (scope_key) DO UPDATE SET through_generation = "
                "MAX(through_generation, excluded.through_generation)",
                (scope_key, through),
            )
            return through

        through = await self._write(work)
        await anyio.to_thread.run_sync(self._checkpoint)
        return through

    def _checkpoint(self) -> None:
        """Copy the WAL into the file and empty it: the frames of earlier transactions still
        hold the pages as they were, destroyed keys included. It waits (busy timeout) for
        readers of other processes; one still reading after that leaves the WAL as it is, and
        the next destroy or the last connection to close empties it."""
        if self.location != ":memory:" and not self.read_only:
            with self._lock:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    async def wrapped_by_others(self, key_id: str) -> list[DataKeyRow]:
        rows = await self._read(
            "SELECT scope_key, generation, master_id, wrapped FROM data_keys WHERE master_id != ?",
            (key_id,),
        )
        return [(str(s), int(g), str(m), bytes(w)) for s, g, m, w in rows]

    async def rewrap(self, row: DataKeyRow, key_id: str, wrapped: bytes) -> None:
        scope_key, generation, old_id, _ = row
        await self._write(
            lambda conn: conn.execute(
                "UPDATE data_keys SET master_id = ?, wrapped = ? "
                "WHERE scope_key = ? AND generation = ? AND master_id = ?",
                (key_id, wrapped, scope_key, generation, old_id),
            )
        )

    async def retire(self, keep: str) -> list[str]:
        def work(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                "SELECT key_id FROM master_checks WHERE key_id != ? "
                "AND key_id NOT IN (SELECT master_id FROM data_keys) ORDER BY key_id",
                (keep,),
            ).fetchall()
            retired = [str(r[0]) for r in rows]
            conn.executemany("DELETE FROM master_checks WHERE key_id = ?", [(k,) for k in retired])
            return retired

        retired = await self._write(work)
        # The end of a rotation: the WAL's older frames hold the keys as the old master key
        # wrapped them.
        await anyio.to_thread.run_sync(self._checkpoint)
        return retired

    async def count(self) -> int:
        return int((await self._read("SELECT COUNT(*) FROM data_keys"))[0][0])

    def changed(self) -> bool:
        with self._lock:
            version = self._data_version()
            if version == self._seen:
                return False
            self._seen = version
            return True

    def _data_version(self) -> int:
        return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    async def aclose(self) -> None:
        await anyio.to_thread.run_sync(self._close)

    def _close(self) -> None:
        with self._lock:
            self._conn.close()


def has_checks(path: str) -> bool:
    """Whether a SQLite key store file exists and holds master key checks (read-only look)."""
    if not Path(path).exists():
        return False
    conn = connect_read_only(path, busy_timeout_ms=10_000)
    try:
        found = conn.execute(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'master_checks'"
        ).fetchone()[0]
        if not found:
            return False
        return bool(conn.execute("SELECT COUNT(*) FROM master_checks").fetchone()[0])
    finally:
        conn.close()
