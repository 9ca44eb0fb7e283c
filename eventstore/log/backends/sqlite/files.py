"""What the SQLite log and the SQLite key store share: opening a file without writing to it, and
the one translation of SQLite's errors into tasktrail's.

Opening read-only. `mode=ro` opens the file without ever writing it, and `query_only` refuses
any statement that would. A database in WAL mode also needs its `-shm` file (the index of the
WAL), which SQLite makes beside the database if it is missing: on a read-only mount, in a folder
this user cannot write, or on a full disk it cannot, and the open fails. Then, if there is no
`-wal` file with frames in it (no process has the database open for writing, and everything it
wrote is in the file), the file is opened `immutable`: read as it is, with no shared memory and
no locks. With frames in the `-wal`, that would read a state without the last commits, so the
open fails instead, saying so.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Final
from urllib.parse import quote

from eventstore.log.errors import ReadOnlyStoreError, StorageError

__all__ = ["READ_ONLY_FIX", "connect_read_only", "translate", "translate_os"]

READ_ONLY_FIX: Final = (
    "to read it, open it read-only: StoreConfig(read_only=True), or --read-only on the command "
    "line (tasktrail serve --read-only answers writes with 503); to write, make it writable"
)

# Only these mean the file or its disk is the trouble; others are a statement's own error.
_FILE_CODES: Final = frozenset(
    {
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_PERM,
    }
)


def connect_read_only(path: str, *, busy_timeout_ms: int) -> sqlite3.Connection:
    """A connection to an existing SQLite file that never writes (see the module doc)."""
    if not Path(path).is_file():
        raise StorageError(
            f"there is no SQLite file {path} to open read-only; check the path (--db), or open "
            "it once without read_only to create it",
            where=path,
            cause="missing",
        )
    uri = f"file:{quote(path)}?mode=ro"
    try:
        return _probe(
            sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False),
            busy_timeout_ms,
        )
    except sqlite3.Error as error:
        code = error.sqlite_errorcode & 0xFF if isinstance(error, sqlite3.Error) else 0
        if code not in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_READONLY):
            raise translate(error, path) from error
        if _wal_frames(path):
            raise StorageError(
                f"SQLite file {path} cannot be opened read-only: its write-ahead log {path}-wal "
                f"holds commits not yet in the file, and its index {path}-shm cannot be made "
                f"here ({error}); open it once where it can be written (or let the process "
                "writing it close it), then read it read-only",
                where=path,
                cause="read_only",
            ) from error
    try:
        immutable = sqlite3.connect(
            f"{uri}&immutable=1", uri=True, isolation_level=None, check_same_thread=False
        )
        return _probe(immutable, busy_timeout_ms)
    except sqlite3.Error as error:
        raise translate(error, path) from error


def _probe(conn: sqlite3.Connection, busy_timeout_ms: int) -> sqlite3.Connection:
    # The file and its WAL are opened at the first statement, not by connect: read once here.
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        conn.execute("PRAGMA query_only = ON")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except BaseException:
        conn.close()
        raise
    return conn


def _wal_frames(path: str) -> bool:
    try:
        return os.path.getsize(f"{path}-wal") > 0
    except OSError:
        return False


def translate(error: sqlite3.Error, path: str) -> StorageError:
    """The StorageError for a SQLite error on the file at `path`: the cause and the fix."""
    code = getattr(error, "sqlite_errorcode", 0) & 0xFF
    where = f"SQLite file {path}"
    if code in _FILE_CODES and path != ":memory:":
        unwritable = _unwritable(path)
        if code == sqlite3.SQLITE_READONLY or unwritable is not None:
            return ReadOnlyStoreError(
                where, f"cannot be written: {unwritable or error}", READ_ONLY_FIX
            )
        if code == sqlite3.SQLITE_FULL or _disk_full(path):
            return StorageError(
                f"{where}: the disk holding it is full ({error}); nothing was written: free "
                "space on it and retry; reading works meanwhile, read-only "
                "(StoreConfig(read_only=True), --read-only)",
                where=path,
                cause="full",
            )
        if code == sqlite3.SQLITE_CANTOPEN:
            return StorageError(
                f"{where} cannot be opened ({error}): check that its folder exists and that "
                "this user may read it (and write it and its folder, unless read-only)",
                where=path,
                cause="io",
            )
        return StorageError(
            f"{where}: an I/O error ({error}); check the disk and the file, then retry; "
            "`tasktrail verify` tells whether the log and the projection still agree",
            where=path,
            cause="io",
        )
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return StorageError(
            f"{where} is locked by another process for longer than the busy timeout "
            f"({error}); nothing was written: retry when it is done",
            where=path,
            cause="locked",
        )
    if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return StorageError(
            f"{where} is damaged or not a database ({error}); restore it from a backup",
            where=path,
            cause="damaged",
        )
    return StorageError(
        f"{where}: SQLite failed: {error}; check the file's permissions and free space",
        where=path,
    )


def translate_os(error: OSError, path: str) -> StorageError:
    """The StorageError for an OSError on the way to the file (making its folder)."""
    unwritable = _unwritable(path)
    if unwritable is not None:
        return ReadOnlyStoreError(
            f"SQLite file {path}", f"cannot be written: {unwritable}", READ_ONLY_FIX
        )
    return StorageError(
        f"SQLite file {path}: {error.strerror or error} ({error.filename or path}); check the "
        "path and this user's permissions",
        where=path,
        cause="io",
    )


def _unwritable(path: str) -> str | None:
    """Why the file at `path` cannot be written, or None if it seems it can."""
    file = Path(path).absolute()
    folder = file.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return f"it is on a read-only file system ({folder})"
    except OSError:
        return None
    if file.exists() and not os.access(file, os.W_OK):
        return f"the file is read-only (mode {file.stat().st_mode & 0o777:o}) for this user"
    if not os.access(folder, os.W_OK):
        return (
            f"its folder {folder} is not writable for this user (SQLite makes {file.name}-wal "
            "and -shm beside the file)"
        )
    return None


def _disk_full(path: str) -> bool:
    folder = Path(path).absolute().parent
    try:
        return os.statvfs(folder).f_bavail == 0
    except OSError:
        return False
