"""Storage backends of the event log, chosen by URL."""

from __future__ import annotations

from functools import partial

import anyio

from eventstore.log.backends.base import LogBackend
from eventstore.log.config import StoreConfig
from eventstore.log.errors import ConfigError
from eventstore.log.keystore import KeyStore

__all__ = ["LogBackend", "open_backend", "open_key_store"]


async def open_backend(url: str, config: StoreConfig) -> LogBackend:
    """Open the backend a URL names: sqlite:///PATH, sqlite://:memory:, memory://, postgresql://."""
    if url.startswith("sqlite://"):
        from eventstore.log.backends.sqlite.backend import SQLiteBackend

        rest = url.removeprefix("sqlite://")
        if rest == ":memory:" or rest == "/:memory:":
            path = ":memory:"
        elif rest.startswith("/") and len(rest) > 1:
            path = rest[1:]  # sqlite:///rel.db -> rel.db, sqlite:////abs.db -> /abs.db
        else:
            raise ConfigError(
                f"cannot read the SQLite URL {url!r}: use sqlite:///relative/path.db, "
                "sqlite:////absolute/path.db or sqlite://:memory:"
            )
        backend = SQLiteBackend(path, durability=config.durability, read_only=config.read_only)
        await backend.open()
        return backend
    if url == "memory://":
        from eventstore.log.backends.memory import MemoryBackend

        return MemoryBackend()
    if url.startswith(("postgresql://", "postgres://")):
        try:
            from eventstore.log.backends.postgres.backend import PostgresBackend
        except ImportError as error:
            raise ConfigError(
                f"{url.split('@')[-1]!r} needs the PostgreSQL driver: "
                "pip install 'tasktrail[postgres]'"
            ) from error
        postgres: LogBackend = await PostgresBackend.connect(url, config)
        return postgres
    raise ConfigError(
        f"unknown store URL {url!r}: use sqlite:///PATH, sqlite://:memory:, memory:// "
        "or postgresql://USER@HOST/DB"
    )


async def open_key_store(
    location: str, *, create: bool, log_url: str = "", read_only: bool = False
) -> KeyStore | None:
    """The key store at a location (a SQLite path, ":memory:", or a postgresql:// URL).

    Without `create`, None when there is none holding master key checks (an unencrypted store).
    `read_only`: opened without writing anything (never made; `create` is ignored).
    """
    create = create and not read_only
    if location.startswith(("postgresql://", "postgres://")):
        from eventstore.log.backends.postgres.keys import PostgresKeys, check_apart

        check_apart(log_url, location)
        store = await PostgresKeys.connect(location, read_only=read_only)
        if not create and not await store.checks():
            await store.aclose()
            return None
        return store
    from eventstore.log.backends.sqlite.keys import SQLiteKeyStore, has_checks

    if not create and (
        location == ":memory:" or not await anyio.to_thread.run_sync(has_checks, location)
    ):
        return None
    return await anyio.to_thread.run_sync(partial(SQLiteKeyStore, location, read_only=read_only))
