"""Storage backends of the event log, chosen by URL."""

from __future__ import annotations

from eventstore.backends.base import LogBackend
from eventstore.config import StoreConfig
from eventstore.errors import ConfigError

__all__ = ["LogBackend", "open_backend"]


async def open_backend(url: str, config: StoreConfig) -> LogBackend:
    """Open the backend a URL names: sqlite:///PATH, sqlite://:memory:, memory://, postgresql://."""
    if url.startswith("sqlite://"):
        from eventstore.backends.sqlite import SQLiteBackend

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
        from eventstore.backends.memory import MemoryBackend

        return MemoryBackend()
    if url.startswith(("postgresql://", "postgres://")):
        try:
            from eventstore.backends.postgres import PostgresBackend
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
