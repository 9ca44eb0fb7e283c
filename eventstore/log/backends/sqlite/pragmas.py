"""Connections to a SQLite file, their settings, and the maintenance steps run on them."""

from __future__ import annotations

import sqlite3
import time
from typing import Final

from eventstore.log.backends.migrations import SELECT_SCHEMA_VERSION

__all__ = [
    "BUSY_TIMEOUT_MS",
    "CHECKPOINT_PAGES",
    "SELECT_PAGE_BYTES",
    "begin_waiting",
    "checkpoint",
    "connect",
    "reclaim_step",
    "rollback",
    "schema_version",
    "timed_commit",
]

# How long a writer waits for another process's write lock before failing.
BUSY_TIMEOUT_MS: Final = 10_000

# The COMMIT that finds the WAL past this many pages also checkpoints it into the database file,
# with an fsync of that file, and its writers wait for that. SQLite's default, 1000 pages (4 MiB),
# made every 15th or so batch of a service under a write load take several times as long; at
# 4000 a checkpoint comes a quarter as often, and costs less than four of those, since a page
# written many times in between (the ends of the indexes) is copied once.
CHECKPOINT_PAGES: Final = 4000


def connect(path: str, *, durability: str) -> sqlite3.Connection:
    """A connection to the file at `path` (":memory:" for a database in memory), set up."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        # Compaction gives space back in small steps (PRAGMA incremental_vacuum). This only
        # takes effect on a new file; an older file is converted by one full VACUUM, at
        # its first compaction that frees pages (see reclaim_step).
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        # Every deleted or replaced row is overwritten with zeros in its page, and every
        # freed page before it joins the free list, on every build (SQLite's upstream
        # default is OFF, Debian's ON). Only for some transactions is not enough: a page
        # split or merge made while it is OFF leaves copies of the rows it moved in the
        # page's free space, which no later erasure can find. An erasure relies on it.
        conn.execute("PRAGMA secure_delete = ON")
        if path != ":memory:":
            conn.execute("PRAGMA journal_mode = WAL")
        synchronous = "FULL" if durability == "full" else "NORMAL"
        conn.execute(f"PRAGMA synchronous = {synchronous}")
    except BaseException:
        conn.close()
        raise
    return conn


_AUTO_VACUUM_NONE: Final = 0
_AUTO_VACUUM_INCREMENTAL: Final = 2
SELECT_PAGE_BYTES: Final = (
    "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()"
)


def reclaim_step(conn: sqlite3.Connection, *, max_pages: int) -> int:
    """One step of giving free pages back; returns the free pages left (0 when done)."""
    free = pragma_int(conn, "freelist_count")
    if free == 0:
        return 0
    mode = pragma_int(conn, "auto_vacuum")
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
        rollback(conn)
        raise
    return pragma_int(conn, "freelist_count")


def schema_version(conn: sqlite3.Connection) -> int:
    """The schema version the file records; 0 for a file with no tasktrail schema yet."""
    found = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchall()
    if not found:
        return 0
    rows = conn.execute(SELECT_SCHEMA_VERSION).fetchall()
    return int(rows[0][0]) if rows else 0


def checkpoint(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()


def pragma_int(conn: sqlite3.Connection, name: str) -> int:
    return int(conn.execute(f"PRAGMA {name}").fetchone()[0])  # name: one of our constants


def timed_commit(conn: sqlite3.Connection) -> float:
    started = time.perf_counter()
    conn.execute("COMMIT")
    return time.perf_counter() - started


def begin_waiting(conn: sqlite3.Connection) -> None:
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    try:
        conn.execute("BEGIN IMMEDIATE")
    finally:
        conn.execute("PRAGMA busy_timeout = 0")


def rollback(conn: sqlite3.Connection) -> None:
    # Undoing an uncommitted WAL transaction writes nothing to disk: fine on the loop thread.
    if conn.in_transaction:
        conn.execute("ROLLBACK")
