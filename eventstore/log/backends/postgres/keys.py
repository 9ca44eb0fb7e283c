"""The key store in PostgreSQL, for stores whose replicas share their data keys.

URL: `postgresql://USER@HOST/DB?schema=NAME`, like the log's, and never the log's own schema: the
wrapped data keys must live apart from the log, so that a backup of the log does not carry them
(see docs/explanation/envelope-encryption.md). Use another schema and back it up apart, or better
another database.

The vault calls a key store with plain blocking calls (eventstore.log.keystore), rarely: a scope's
first write, an erasure, a rotation, a read of a scope not seen yet. So this store keeps one
asyncpg connection on an event loop of its own, in a thread, and waits for each call. Writes take
one transaction-scoped advisory lock, so replicas making keys at once take turns. An erasure
notifies the other replicas (LISTEN/NOTIFY), which then forget the data keys they hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine, Sequence
from typing import Any, Final, TypeVar

import asyncpg

from eventstore.log.backends.postgres.backend import _quote_ident, _translate, _where, split_url
from eventstore.log.errors import ConfigError, EventStoreError
from eventstore.log.keystore import DataKeyRow, KeyStore, MakeKey

__all__ = ["PostgresKeyStore"]

T = TypeVar("T")

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


class PostgresKeyStore(KeyStore):
    def __init__(self, url: str, *, read_only: bool = False) -> None:
        dsn, schema = split_url(url)
        self.location = _where(url) + (f" schema {schema}" if schema else "")
        self.read_only = read_only
        self._exists = True  # read-only: whether the key store's tables are there at all
        self._schema = schema
        self._dirty = False
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="tasktrail-keys", daemon=True
        )
        self._thread.start()
        try:
            self._conn: asyncpg.Connection = self._run(self._connect(dsn))
        except BaseException:
            self._stop()
            raise

    async def _connect(self, dsn: str) -> asyncpg.Connection:
        try:
            conn = await asyncpg.connect(dsn)
        except (OSError, asyncpg.PostgresError) as error:
            raise EventStoreError(f"cannot reach the key store {self.location}: {error}") from error
        try:
            if self.read_only:
                # Nothing made: every transaction of the session is read-only.
                await conn.execute("SET default_transaction_read_only = on")
                if self._schema is not None:
                    await conn.execute(f"SET search_path TO {_quote_ident(self._schema)}")
                self._exists = bool(
                    await conn.fetchval("SELECT to_regclass('master_checks') IS NOT NULL")
                )
            else:
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)
                    if self._schema is not None:
                        name = _quote_ident(self._schema)
                        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {name}")
                        await conn.execute(f"SET search_path TO {name}")
                    for statement in _SCHEMA:
                        await conn.execute(statement)
            await conn.add_listener(_CHANNEL, self._notified)
        except BaseException:
            await conn.close()
            raise
        return conn

    def _notified(self, conn: Any, pid: int, channel: str, payload: object) -> None:
        if pid != self._conn.get_server_pid():
            self._dirty = True

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        with self._lock:
            try:
                return asyncio.run_coroutine_threadsafe(coro, self._loop).result()
            except asyncpg.PostgresError as error:
                raise _translate(error, f"the key store {self.location}") from error

    async def _write(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        async with self._conn.transaction():
            await self._conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)
            for sql, args in statements:
                await self._conn.execute(sql, *args)

    def checks(self) -> dict[str, bytes]:
        if not self._exists:
            return {}
        rows = self._run(self._conn.fetch("SELECT key_id, sealed FROM master_checks"))
        return {r[0]: bytes(r[1]) for r in rows}

    def add_check(self, key_id: str, sealed: bytes) -> None:
        sql = "INSERT INTO master_checks VALUES ($1, $2) ON CONFLICT (key_id) DO NOTHING"
        self._run(self._write([(sql, (key_id, sealed))]))

    def master_ids(self) -> set[str]:
        rows = self._run(self._conn.fetch("SELECT DISTINCT master_id FROM data_keys"))
        return {r[0] for r in rows}

    def current_keys(self, scope_keys: Sequence[str], make: MakeKey) -> list[DataKeyRow]:
        async def work() -> list[DataKeyRow]:
            found: list[DataKeyRow] = []
            async with self._conn.transaction():
                await self._conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)
                for scope_key in scope_keys:
                    encoded = scope_key.encode()
                    row = await self._conn.fetchrow(_SELECT_LATEST, encoded)
                    if row is None:
                        erased = await self._conn.fetchval(_SELECT_ERASED, encoded)
                        generation = (erased or 0) + 1
                        master_id, wrapped = make(scope_key, generation)
                        await self._conn.execute(
                            _INSERT_KEY, encoded, generation, master_id, wrapped
                        )
                        found.append((scope_key, generation, master_id, wrapped))
                    else:
                        found.append((scope_key, row[0], row[1], bytes(row[2])))
            return found

        return self._run(work())

    def data_keys(self, scope_key: str) -> tuple[list[DataKeyRow], int]:
        async def work() -> tuple[list[DataKeyRow], int]:
            encoded = scope_key.encode()
            rows = await self._conn.fetch(
                "SELECT generation, master_id, wrapped FROM data_keys WHERE scope_key = $1",
                encoded,
            )
            erased = await self._conn.fetchval(_SELECT_ERASED, encoded)
            return [(scope_key, r[0], r[1], bytes(r[2])) for r in rows], erased or 0

        return self._run(work())

    def destroy(self, scope_key: str) -> int:
        async def work() -> int:
            encoded = scope_key.encode()
            async with self._conn.transaction():
                await self._conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)
                through = await self._conn.fetchval(
                    "SELECT MAX(generation) FROM data_keys WHERE scope_key = $1", encoded
                )
                through = through or 0
                await self._conn.execute("DELETE FROM data_keys WHERE scope_key = $1", encoded)
                await self._conn.execute(_DESTROY, encoded, through)
                # Delivered at commit: the other replicas drop the keys they hold.
                await self._conn.execute("SELECT pg_notify($1, '')", _CHANNEL)
                deleted_by = await self._conn.fetchval(_OWN_XID)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_OLDER_TRANSACTIONS_WAIT):
                    # Polled: PostgreSQL tells no one when a transaction ends.
                    while await self._conn.fetchval(_OLDER_TRANSACTIONS, deleted_by):  # noqa: ASYNC110
                        await asyncio.sleep(0.01)
            # The DELETE leaves the row as a dead tuple, and a plain VACUUM only marks its
            # space free: the wrapped key stays in the page until new rows happen to cover it.
            # VACUUM FULL writes the live rows to a new file, and the old one is emptied at
            # once and unlinked at the next checkpoint. It locks the table out (ACCESS
            # EXCLUSIVE) while it copies it: the other replicas' key look-ups wait that long
            # (measured: 200,000 scopes' keys, 48 MB, in 0.34 s). What stays is in the WAL
            # and in backups: see docs/explanation/envelope-encryption.md.
            await self._conn.execute(_VACUUM_KEYS)
            return int(through)

        return self._run(work())

    def wrapped_by_others(self, key_id: str) -> list[DataKeyRow]:
        rows = self._run(
            self._conn.fetch(
                "SELECT scope_key, generation, master_id, wrapped FROM data_keys "
                "WHERE master_id <> $1",
                key_id,
            )
        )
        return [(bytes(r[0]).decode(), r[1], r[2], bytes(r[3])) for r in rows]

    def rewrap(self, row: DataKeyRow, key_id: str, wrapped: bytes) -> None:
        scope_key, generation, old_id, _ = row
        sql = (
            "UPDATE data_keys SET master_id = $1, wrapped = $2 "
            "WHERE scope_key = $3 AND generation = $4 AND master_id = $5"
        )
        self._run(self._write([(sql, (key_id, wrapped, scope_key.encode(), generation, old_id))]))

    def retire(self, keep: str) -> list[str]:
        async def work() -> list[str]:
            async with self._conn.transaction():
                await self._conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)
                rows = await self._conn.fetch(
                    "DELETE FROM master_checks WHERE key_id <> $1 "
                    "AND key_id NOT IN (SELECT master_id FROM data_keys) RETURNING key_id",
                    keep,
                )
            return sorted(r[0] for r in rows)

        return self._run(work())

    def count(self) -> int:
        return int(self._run(self._conn.fetchval("SELECT COUNT(*) FROM data_keys")))

    def changed(self) -> bool:
        dirty, self._dirty = self._dirty, False
        return dirty

    def changed_pending(self) -> bool:
        """Whether an erasure elsewhere was heard of and not yet looked at (for tests)."""
        return self._dirty

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        try:
            self._run(self._conn.close())
        finally:
            self._stop()

    def _stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


def check_apart(log_url: str, key_store_url: str) -> None:
    """Refuse a key store in the log's own schema of the same database."""
    if log_url.startswith(("postgresql://", "postgres://")) and split_url(log_url) == split_url(
        key_store_url
    ):
        raise ConfigError("the key store must live apart from the log: name another schema")
