"""What every module of the PostgreSQL backend shares: the URL, the driver's errors, and rows.

Every driver error becomes an `EventStoreError` in `translated`, the one place the backend (and
its key store) translates them. Text that users choose (keys, task ids, idempotency ids) is
stored as its UTF-8 bytes (BYTEA): PostgreSQL's text cannot hold NUL, which a key may contain,
and bytes sort the way SQLite sorts text (by code point).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from eventstore.log.backends.migrations import columns
from eventstore.log.backends.rows import CurrentRow, EventRow, IdempotentRow, ScopeRow
from eventstore.log.errors import (
    ConfigError,
    EventStoreError,
    ReadOnlyStoreError,
    StorageError,
)

__all__ = [
    "CURRENT_COLUMNS",
    "DRIVER_ERRORS",
    "EVENT_COLUMNS",
    "IDEMPOTENT_COLUMNS",
    "SCOPE_COLUMNS",
    "current_row",
    "describe",
    "encode",
    "event_row",
    "keep_session",
    "lost",
    "quote_ident",
    "scope_row",
    "split_url",
    "translated",
]

# The columns of each table in the order of its row Struct's fields, so rows read with them
# convert by position.
EVENT_COLUMNS: Final = columns(EventRow)
CURRENT_COLUMNS: Final = columns(CurrentRow)
SCOPE_COLUMNS: Final = columns(ScopeRow)
IDEMPOTENT_COLUMNS: Final = columns(IdempotentRow)


def split_url(url: str) -> tuple[str, str | None]:
    """The URL asyncpg should connect to, and the schema named by `?schema=`, if any."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [value for name, value in query if name == "schema"]
    if len(schemas) > 1 or (schemas and not schemas[0]):
        raise ConfigError(f"the PostgreSQL URL names the schema more than once or empty: {url!r}")
    rest = urlencode([(name, value) for name, value in query if name != "schema"])
    return urlunsplit(parts._replace(query=rest)), (schemas[0] if schemas else None)


def describe(url: str) -> str:
    """A URL fit for messages: host, port, database and options, never the password."""
    parts = urlsplit(url)
    return f"PostgreSQL database {parts.hostname}:{parts.port or 5432}{parts.path}"


async def keep_session(conn: asyncpg.Connection) -> None:
    """Nothing to reset when a connection goes back to the pool, and no round trip for it.

    asyncpg rolls back an open transaction itself first. Beyond that its default reset (unlock
    advisory locks, close cursors, unlisten, RESET ALL) undoes session state this backend never
    leaves behind: its advisory locks are transaction-scoped, but for the compaction lock, which
    `compaction_lock` releases itself (or closes the connection); its settings are startup
    parameters.
    """


def lost(conn: PoolConnectionProxy[asyncpg.Record]) -> bool:
    """Whether a pooled connection closed. Once it has, the driver may have released it to the
    pool itself, and the released proxy answers nothing but an error."""
    try:
        closed: bool = conn.is_closed()
    except asyncpg.InterfaceError:
        return True
    return closed


def quote_ident(name: str) -> str:
    """A name as a quoted SQL identifier: an identifier cannot be a parameter, and quoting makes
    any name (spaces, quotes, capitals) safe and exact."""
    if "\x00" in name:
        raise ConfigError(f"a PostgreSQL schema name cannot contain NUL: {name!r}")
    return '"' + name.replace('"', '""') + '"'


def encode(text: str | None) -> bytes | None:
    return None if text is None else text.encode()


def _decode(data: bytes | None) -> str | None:
    return None if data is None else data.decode()


def event_row(r: asyncpg.Record) -> EventRow:
    return EventRow(r[0], r[1], r[2], r[3], _decode(r[4]), r[5], r[6], r[7], r[8], r[9])


def current_row(r: asyncpg.Record) -> CurrentRow:
    return CurrentRow(r[0], r[1].decode(), r[2], r[3], r[4], r[5], r[6])


def scope_row(r: asyncpg.Record | tuple[Any, ...]) -> ScopeRow:
    return ScopeRow(
        scope_id=r[0],
        scope_key=r[1],
        version=r[2],
        max_try=r[3],
        updated_at=r[4],
        dag_id=_decode(r[5]),
        run_id=_decode(r[6]),
        task_id=_decode(r[7]),
        map_index=r[8],
    )


# What the driver raises: the server's errors, its own (misuse and its internal state, e.g. a
# statement sent on a connection that was lost mid-statement), and the network's.
DRIVER_ERRORS: Final = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)


@contextmanager
def translated(where: str) -> Iterator[None]:
    """Every driver error becomes an EventStoreError here, and only here; `where` names the
    database (or key store) in the message."""
    try:
        yield
    except DRIVER_ERRORS as error:
        raise _translate(error, where) from error


def _translate(error: BaseException, where: str) -> EventStoreError:
    if isinstance(error, asyncpg.InvalidCatalogNameError):
        return ConfigError(f"{where} does not exist; create it (createdb) or fix the URL")
    if isinstance(error, asyncpg.InvalidAuthorizationSpecificationError | OSError):
        return ConfigError(
            f"cannot connect to {where}: {error}; check the host, port, user and password"
        )
    if isinstance(error, asyncpg.ReadOnlySQLTransactionError):
        return ReadOnlyStoreError(
            where,
            f"cannot be written ({error}): the store is open read-only or the server is a "
            "read-only standby",
            "open it without read_only, on the primary, to write",
        )
    if isinstance(error, asyncpg.DiskFullError):
        return StorageError(
            f"{where}: the server's disk is full ({error}); nothing was written: free space on "
            "it and retry; reading works meanwhile (StoreConfig(read_only=True), --read-only)",
            where=where,
            cause="full",
        )
    return StorageError(
        f"{where} failed: {error}; check the server's log and the connection", where=where
    )
