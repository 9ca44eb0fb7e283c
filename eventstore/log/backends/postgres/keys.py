"""The key store in PostgreSQL, for stores whose replicas share their data keys.

URL: `postgresql://USER@HOST/DB?schema=NAME`, like the log's, and never the log's own schema: the
wrapped data keys must live apart from the log, so that a backup of the log does not carry them
(see docs/explanation/envelope-encryption.md). Use another schema and back it up apart, or better
another database.

`PostgresKeys` is the key store itself: async, on one asyncpg connection of the caller's event
loop. Writes take one transaction-scoped advisory lock, so replicas making keys at once take
turns. An erasure notifies the other replicas (LISTEN/NOTIFY), which then forget the data keys
they hold.

The vault awaits it rarely: a scope's first write, an erasure, a rotation, the first read of a
scope's sealed values (eventstore.log.keystore).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final

import anyio
import asyncpg

from eventstore.log.backends.postgres.driver import describe, quote_ident, split_url, translated
from eventstore.log.errors import ConfigError
from eventstore.log.keystore import DataKeyRow, KeyStore, MakeKey

__all__ = ["PostgresKeys", "check_apart"]

_CHANNEL: Final = "tasktrail_keys_erased"
_LOCK: Final = 0x7461736B6B657973  # "taskkeys": one advisory lock for key store writes

_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS master_checks (
        key_id TEXT PRIMARY KEY,
        sealed BYTEA NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS data_keys (
        scope_key BYTEA NOT NULL,
        generation INTEGER NOT NULL,
        master_id TEXT NOT NULL,
        wrapped BYTEA NOT NULL,
        PRIMARY KEY (scope_key, generation)
    )""",
    """CREATE TABLE IF NOT EXISTS erased (
        scope_key BYTEA PRIMARY KEY,
        through_generation INTEGER NOT NULL
    )""",
)
_SELECT_LATEST: Final = (
    "SELECT generation, master_id, wrapped FROM data_keys WHERE scope_key = $1 "
    "ORDER BY generation DESC LIMIT 1"
)
_SELECT_ERASED: Final = "SELECT through_generation FROM erased WHERE scope_key = $1"
_INSERT_KEY: Final = (
    "INSERT INTO data_keys (scope_key, generation, master_id, wrapped) VALUES ($1, $2, $3, $4)"
)
# Not in a transaction: VACUUM cannot run in one.
_VACUUM_KEYS: Final = "VACUUM (FULL) data_keys"
# VACUUM FULL copies a deleted row too while a transaction that may still see it is open: one
# whose snapshot on this database predates the delete's commit, or one with an older xid
# anywhere in the cluster. Counts those, given the deleting transaction's xid.
_OLDER_TRANSACTIONS: Final = (
    "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND ("
    "(backend_xid IS NOT NULL AND age(backend_xid) >= age($1::xid)) OR "
    "(datname = current_database() AND backend_xmin IS NOT NULL "
    "AND age(backend_xmin) >= age($1::xid)))"
)
_OWN_XID: Final = "SELECT backend_xid FROM pg_stat_activity WHERE pid = pg_backend_pid()"
# How long an erasure waits for those transactions to end (the log's own last milliseconds).
# A longer one (a pg_dump, a session left idle in a transaction) outlasts it: the row then
# stays in the page until a later VACUUM FULL; docs/explanation/envelope-encryption.md.
_OLDER_TRANSACTIONS_WAIT: Final = 5.0
_DESTROY: Final = (
    "INSERT INTO erased (scope_key, through_generation) VALUES ($1, $2) "
    "ON CONFLICT (scope_key) DO UPDATE SET through_generation = "
    "GREATEST(erased.through_generation, excluded.through_generation)"
)


_SELECT_KEYS: Final = "SELECT generation, master_id, wrapped FROM data_keys WHERE scope_key = $1"
_INSERT_CHECK: Final = "INSERT INTO master_checks VALUES ($1, $2) ON CONFLICT (key_id) DO NOTHING"
_SELECT_WRAPPED_BY_OTHERS: Final = (
    "SELECT scope_key, generation, master_id, wrapped FROM data_keys WHERE master_id <> $1"
)
_REWRAP: Final = (
    "UPDATE data_keys SET master_id = $1, wrapped = $2 "
    "WHERE scope_key = $3 AND generation = $4 AND master_id = $5"
)
_RETIRE: Final = (
    "DELETE FROM master_checks WHERE key_id <> $1 "
    "AND key_id NOT IN (SELECT master_id FROM data_keys) RETURNING key_id"
)


class PostgresKeys(KeyStore):
    """The key store's statements, awaited on one connection (see the module doc)."""

    def __init__(
        self, conn: asyncpg.Connection, location: str, *, exists: bool, read_only: bool = False
    ) -> None:
        self._conn = conn
        self.location = location
        self.read_only = read_only
        self.exists = exists  # read-only: whether the key store's tables are there at all
        self._dirty = False
        # One statement at a time on the connection, whichever task asks.
        self._lock = anyio.Lock()

    @classmethod
    async def connect(cls, url: str, *, read_only: bool = False) -> PostgresKeys:
        dsn, schema = split_url(url)
        location = describe(url) + (f" schema {schema}" if schema else "")
        with translated(f"the key store {location}"):
            conn = await asyncpg.connect(dsn)
            try:
                exists = await _prepare(conn, schema, read_only=read_only)
                keys = cls(conn, location, exists=exists, read_only=read_only)
                await conn.add_listener(_CHANNEL, keys._notified)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await conn.close()
                raise
        return keys

    def _notified(self, conn: Any, pid: int, channel: str, payload: object) -> None:
        if pid != self._conn.get_server_pid():
            self._dirty = True

    @asynccontextmanager
    async def _using(self, *, write: bool = False) -> AsyncIterator[asyncpg.Connection]:
        """The connection, alone, with driver errors translated; `write`: in a transaction
        under the key store's lock."""
        async with self._lock:
            with translated(f"the key store {self.location}"):
                if not write:
                    yield self._conn
                    return
                async with self._conn.transaction():
                    await self._conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)
                    yield self._conn

    async def checks(self) -> dict[str, bytes]:
        if not self.exists:
            return {}
        async with self._using() as conn:
            rows = await conn.fetch("SELECT key_id, sealed FROM master_checks")
        return {r[0]: bytes(r[1]) for r in rows}

    async def add_check(self, key_id: str, sealed: bytes) -> None:
        async with self._using(write=True) as conn:
            await conn.execute(_INSERT_CHECK, key_id, sealed)

    async def master_ids(self) -> set[str]:
        async with self._using() as conn:
            rows = await conn.fetch("SELECT DISTINCT master_id FROM data_keys")
        return {r[0] for r in rows}

    async def current_keys(self, scope_keys: Sequence[str], make: MakeKey) -> list[DataKeyRow]:
        found: list[DataKeyRow] = []
        async with self._using(write=True) as conn:
            for scope_key in scope_keys:
                encoded = scope_key.encode()
                row = await conn.fetchrow(_SELECT_LATEST, encoded)
                if row is None:
                    erased = await conn.fetchval(_SELECT_ERASED, encoded)
                    generation = (erased or 0) + 1
                    master_id, wrapped = make(scope_key, generation)
                    await conn.execute(_INSERT_KEY, encoded, generation, master_id, wrapped)
                    found.append((scope_key, generation, master_id, wrapped))
                else:
                    found.append((scope_key, row[0], row[1], bytes(row[2])))
        return found

    async def data_keys(self, scope_key: str) -> tuple[list[DataKeyRow], int]:
        encoded = scope_key.encode()
        async with self._using() as conn:
            rows = await conn.fetch(_SELECT_KEYS, encoded)
            erased = await conn.fetchval(_SELECT_ERASED, encoded)
        return [(scope_key, r[0], r[1], bytes(r[2])) for r in rows], erased or 0

    async def destroy(self, scope_key: str) -> int:
        encoded = scope_key.encode()
        async with self._using(write=True) as conn:
            through = await conn.fetchval(
                "SELECT MAX(generation) FROM data_keys WHERE scope_key = $1", encoded
            )
            through = through or 0
            await conn.execute("DELETE FROM data_keys WHERE scope_key = $1", encoded)
            await conn.execute(_DESTROY, encoded, through)
            # Delivered at commit: the other replicas drop the keys they hold.
            await conn.execute("SELECT pg_notify($1, '')", _CHANNEL)
            deleted_by = await conn.fetchval(_OWN_XID)
        async with self._using() as conn:
            with anyio.move_on_after(_OLDER_TRANSACTIONS_WAIT):
                # Polled: PostgreSQL tells no one when a transaction ends.
                while await conn.fetchval(_OLDER_TRANSACTIONS, deleted_by):  # noqa: ASYNC110
                    await anyio.sleep(0.01)
            # The DELETE leaves the row as a dead tuple, and a plain VACUUM only marks its
            # space free: the wrapped key stays in the page until new rows happen to cover it.
            # VACUUM FULL writes the live rows to a new file, and the old one is emptied at
            # once and unlinked at the next checkpoint. It locks the table out (ACCESS
            # EXCLUSIVE) while it copies it: the other replicas' key look-ups wait that long
            # (measured: 200,000 scopes' keys, 48 MB, in 0.34 s). What stays is in the WAL
            # and in backups: see docs/explanation/envelope-encryption.md.
            await conn.execute(_VACUUM_KEYS)
        return int(through)

    async def wrapped_by_others(self, key_id: str) -> list[DataKeyRow]:
        async with self._using() as conn:
            rows = await conn.fetch(_SELECT_WRAPPED_BY_OTHERS, key_id)
        return [(bytes(r[0]).decode(), r[1], r[2], bytes(r[3])) for r in rows]

    async def rewrap(self, row: DataKeyRow, key_id: str, wrapped: bytes) -> None:
        scope_key, generation, old_id, _ = row
        async with self._using(write=True) as conn:
            await conn.execute(_REWRAP, key_id, wrapped, scope_key.encode(), generation, old_id)

    async def retire(self, keep: str) -> list[str]:
        async with self._using(write=True) as conn:
            rows = await conn.fetch(_RETIRE, keep)
        return sorted(r[0] for r in rows)

    async def count(self) -> int:
        async with self._using() as conn:
            return int(await conn.fetchval("SELECT COUNT(*) FROM data_keys"))

    def changed(self) -> bool:
        dirty, self._dirty = self._dirty, False
        return dirty

    def changed_pending(self) -> bool:
        """Whether an erasure elsewhere was heard of and not yet looked at (for tests)."""
        return self._dirty

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            await self._conn.close()


async def _prepare(conn: asyncpg.Connection, schema: str | None, *, read_only: bool) -> bool:
    """Make the key store's tables (unless read-only); whether they exist."""
    if read_only:
        # Nothing made: every transaction of the session is read-only.
        await conn.execute("SET default_transaction_read_only = on")
        if schema is not None:
            await conn.execute(f"SET search_path TO {quote_ident(schema)}")
        return bool(await conn.fetchval("SELECT to_regclass('master_checks') IS NOT NULL"))
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)
        if schema is not None:
            name = quote_ident(schema)
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {name}")
            await conn.execute(f"SET search_path TO {name}")
        for statement in _SCHEMA:
            await conn.execute(statement)
    return True


def check_apart(log_url: str, key_store_url: str) -> None:
    """Refuse a key store in the log's own schema of the same database."""
    if log_url.startswith(("postgresql://", "postgres://")) and split_url(log_url) == split_url(
        key_store_url
    ):
        raise ConfigError("the key store must live apart from the log: name another schema")
