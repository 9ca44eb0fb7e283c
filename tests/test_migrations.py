"""Schema migrations: an older database is brought up to date, a newer one is refused."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import msgspec
import pytest
from conftest import FakeClock, postgres_schema_url

from eventstore import TaskScope, open_store
from eventstore.log.backends.migrations import Migration, latest_version, pending_migrations
from eventstore.log.backends.postgres import backend as postgres
from eventstore.log.backends.sqlite import backend as sqlite
from eventstore.log.errors import SchemaVersionError
from eventstore.log.events import KeySet, encode_event
from eventstore.log.requests import AppendResult
from eventstore.log.scopes import scope_key

KINDS = ["sqlite", "postgres"]


@pytest.fixture(params=KINDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        yield SQLiteDatabase(tmp_path / "old.db")
    else:
        with postgres_schema_url() as url:
            yield PostgresDatabase(url)


class Database:
    url: str
    migrations: tuple[Migration, ...]

    async def execute(self, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
        raise NotImplementedError

    async def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    async def indexes(self) -> set[str]:
        raise NotImplementedError


class SQLiteDatabase(Database):
    migrations = sqlite.MIGRATIONS

    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = f"sqlite:///{path}"

    async def execute(self, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
        with sqlite3.connect(self.path) as conn:
            for sql, params in statements:
                conn.execute(sql.replace("$", "?"), params)  # "$n" placeholders become "?n"
        conn.close()

    async def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.path) as conn:
            rows = list(conn.execute(sql))
        conn.close()
        return rows

    async def indexes(self) -> set[str]:
        rows = await self.fetch("SELECT name FROM sqlite_master WHERE type = 'index'")
        return {r[0] for r in rows}


class PostgresDatabase(Database):
    migrations = postgres.MIGRATIONS

    def __init__(self, url: str) -> None:
        self.url = url
        self.dsn, schema = postgres.split_url(url)
        assert schema is not None
        self.schema = schema

    async def _connect(self) -> Any:
        import asyncpg

        conn = await asyncpg.connect(self.dsn)
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
        await conn.execute(f'SET search_path = "{self.schema}"')
        return conn

    async def execute(self, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
        conn = await self._connect()
        try:
            async with conn.transaction():
                for sql, params in statements:
                    await conn.execute(sql, *params)
        finally:
            await conn.close()

    async def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        conn = await self._connect()
        try:
            return [tuple(r) for r in await conn.fetch(sql)]
        finally:
            await conn.close()

    async def indexes(self) -> set[str]:
        rows = await self.fetch(
            "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
        )
        return {r[0] for r in rows}


def text(db: Database, value: str) -> Any:
    """A user-chosen text column as the backend stores it (PostgreSQL: UTF-8 bytes)."""
    return value.encode() if isinstance(db, PostgresDatabase) else value


FIRST_WRITE: Final = AppendResult(
    version=1, seq=1, events=1, recorded_at=datetime(2026, 1, 1, tzinfo=UTC)
)


async def make_version_1(db: Database) -> None:
    """A database exactly as the first schema left it, with one task's checkpoint in it."""
    step_1 = db.migrations[0]
    assert step_1.version == 1
    scope = TaskScope("etl", "run_1", "load")
    payload = encode_event(KeySet(key="offset", value=msgspec.Raw(b"1200")))
    micros = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
    await db.execute(
        [(sql, ()) for sql in step_1.statements]
        + [
            ("UPDATE schema_version SET version = 1", ()),
            (
                "INSERT INTO scopes (scope_id, scope_key, version, max_try, updated_at, dag_id, "
                "run_id, task_id, map_index) VALUES (1, $1, 1, 1, $2, $3, $4, $5, -1)",
                (
                    scope_key(scope),
                    micros,
                    text(db, "etl"),
                    text(db, "run_1"),
                    text(db, "load"),
                ),
            ),
            (
                "INSERT INTO events (seq, scope_id, version, kind, key, expires_at, recorded_at, "
                "try_number, actor, payload) VALUES (1, 1, 1, 'set', $1, NULL, $2, 1, 'task', $3)",
                (text(db, "offset"), micros, payload),
            ),
            (
                "INSERT INTO current (scope_id, key, value, expires_at, version, seq, updated_at) "
                "VALUES (1, $1, $2, NULL, 1, 1, $3)",
                (text(db, "offset"), b"1200", micros),
            ),
            (
                "INSERT INTO idempotency (scope_id, idempotency_id, result) VALUES (1, $1, $2)",
                (text(db, "write-1"), msgspec.json.encode(FIRST_WRITE)),
            ),
            ("UPDATE log_head SET last_seq = 1, last_recorded_at = $1", (micros,)),
        ]
    )


async def test_an_empty_database_gets_every_step(db: Database) -> None:
    async with open_store(db.url) as store:
        await store.task_store("d", "r", "t").set("k", 1)
    assert await db.fetch("SELECT version FROM schema_version") == [
        (latest_version(db.migrations),)
    ]
    assert "events_by_scope_try" in await db.indexes()


async def test_a_version_1_database_is_migrated_and_keeps_its_data(db: Database) -> None:
    await make_version_1(db)
    assert "events_by_scope_try" not in await db.indexes()

    async with open_store(db.url, clock=FakeClock()) as store:
        ts = store.task_store("etl", "run_1", "load", try_number=2)
        assert await ts.get("offset") == 1200
        assert await ts.version() == 1
        # The write's idempotency id survived the new idempotency table: a retry appends nothing.
        assert await ts.set("offset", 1200, idempotency_id="write-1") == FIRST_WRITE
        result = await ts.set("offset", 1300)
        assert (result.version, result.seq) == (2, 2)
        assert (await store.verify()).ok

    assert await db.fetch("SELECT version FROM schema_version") == [
        (latest_version(db.migrations),)
    ]
    assert "events_by_scope_try" in await db.indexes()
    assert "scopes_by_updated" in await db.indexes()
    # Kept from before the migration, the result counts as recorded at the log's newest time.
    assert await db.fetch("SELECT recorded_at FROM idempotency") == [(1_767_225_600_000_000,)]
    # Opening it again finds nothing to do.
    async with open_store(db.url, clock=FakeClock()) as store:
        assert await store.task_store("etl", "run_1", "load").get("offset") == 1300


async def test_a_database_from_a_newer_tasktrail_is_refused(db: Database) -> None:
    async with open_store(db.url):
        pass
    await db.execute([("UPDATE schema_version SET version = 999", ())])
    supported = latest_version(db.migrations)
    with pytest.raises(
        SchemaVersionError,
        match=rf"has schema version 999, this tasktrail supports up to {supported}; upgrade",
    ) as caught:
        async with open_store(db.url):
            pass
    assert (caught.value.found, caught.value.supported) == (999, supported)
    assert await db.fetch("SELECT version FROM schema_version") == [(999,)]


async def test_a_failing_step_leaves_the_old_version_intact(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    await make_version_1(db)
    module = sqlite if isinstance(db, SQLiteDatabase) else postgres
    broken = (
        *db.migrations,
        Migration(
            len(db.migrations) + 1,
            "a step that fails halfway",
            ("CREATE TABLE later (x INTEGER)", "BOGUS"),
        ),
    )
    monkeypatch.setattr(module, "MIGRATIONS", broken)
    monkeypatch.setattr(module, "SCHEMA_VERSION", len(broken))
    with pytest.raises(Exception, match=r"(?i)syntax"):
        async with open_store(db.url):
            pass
    assert await db.fetch("SELECT version FROM schema_version") == [(1,)]
    assert "events_by_scope_try" not in await db.indexes()


def test_pending_steps_are_the_ones_above_the_found_version() -> None:
    steps = (Migration(1, "one", ("A",)), Migration(2, "two", ("B",)), Migration(3, "3", ()))
    assert [s.version for s in pending_migrations(0, steps, "db")] == [1, 2, 3]
    assert [s.version for s in pending_migrations(2, steps, "db")] == [3]
    assert pending_migrations(3, steps, "db") == []
    with pytest.raises(SchemaVersionError, match=r"db has schema version 4, .* up to 3"):
        pending_migrations(4, steps, "db")


def test_steps_must_be_numbered_without_gaps() -> None:
    with pytest.raises(AssertionError, match="step 2 says 3"):
        latest_version((Migration(1, "one", ()), Migration(3, "three", ())))


def test_both_backends_are_at_the_same_schema_version() -> None:
    # Step 5 is the log layout (history through the version index) on both.
    assert sqlite.SCHEMA_VERSION == postgres.SCHEMA_VERSION == 5
    assert [m.summary for m in sqlite.MIGRATIONS] == [m.summary for m in postgres.MIGRATIONS]
