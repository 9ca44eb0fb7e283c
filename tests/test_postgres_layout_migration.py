"""A PostgreSQL log made by the release before schema step 5 (per-event try and time indexes) is
migrated in place, and every history question gets the answer it got before."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

import asyncpg
import pytest
from conftest import postgres_schema_url

from eventstore import StoreConfig
from eventstore.log.backends.postgres.backend import SCHEMA_VERSION, PostgresBackend, split_url
from eventstore.log.backends.postgres.statements import TRY_COLUMNS
from eventstore.log.backends.rows import CurrentRow, EventRow, IdempotentRow
from tests.migrated_log import TRIES, check_every_history_question

# Made by tests/fixtures/make_schema_4_tries.py with tasktrail at main bb1f6ef: the
# schema `tasktrail_schema_4_fixture`, dumped by pg_dump.
FIXTURE: Final = Path(__file__).parent / "fixtures" / "postgres-schema-4-tries.sql"
FIXTURE_SCHEMA: Final = "tasktrail_schema_4_fixture"


@pytest.fixture
async def old_schema() -> AsyncIterator[tuple[str, str, str]]:
    """The URL of a fresh schema holding the dump, the DSN and the schema's name."""
    with postgres_schema_url() as url:
        dsn, schema = split_url(url)
        assert schema is not None
        dump = FIXTURE.read_text().replace(FIXTURE_SCHEMA, schema)
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(dump)
        finally:
            await conn.close()
        yield url, dsn, schema


async def test_a_schema_4_database_answers_every_history_question_after_the_migration(
    old_schema: tuple[str, str, str],
) -> None:
    url, dsn, schema = old_schema
    await check_every_history_question(url)
    conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    try:
        version = await conn.fetchval("SELECT version FROM schema_version")
        found = await conn.fetch("SELECT indexname FROM pg_indexes WHERE schemaname = $1", schema)
        indexes = {r[0] for r in found}
        tries = await conn.fetch("SELECT * FROM tries ORDER BY scope_id, try_number")
    finally:
        await conn.close()
    assert version == SCHEMA_VERSION
    assert "events_by_scope_time" not in indexes
    assert [tuple(r) for r in tries] == TRIES


# The write statement sends each table's rows as an array of the table's row type, every row a
# tuple of its Struct's fields: the row type's columns must be those fields, in that order.
ROW_TYPES: Final = {
    "events": list(EventRow.__struct_fields__),
    "current": list(CurrentRow.__struct_fields__),
    "idempotency": list(IdempotentRow.__struct_fields__),
    "tries": TRY_COLUMNS.split(", "),
}


async def _row_types(dsn: str, schema: str) -> dict[str, list[str]]:
    conn = await asyncpg.connect(dsn)
    try:
        found = {}
        for table in ROW_TYPES:
            rows = await conn.fetch(
                "SELECT a.attname FROM pg_attribute AS a JOIN pg_class AS c ON c.oid = a.attrelid "
                "JOIN pg_namespace AS n ON n.oid = c.relnamespace WHERE n.nspname = $1 "
                "AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
                schema,
                table,
            )
            found[table] = [r[0] for r in rows]
        return found
    finally:
        await conn.close()


async def test_the_rows_a_batch_sends_have_the_columns_of_the_tables_row_types(
    old_schema: tuple[str, str, str],
) -> None:
    url, dsn, migrated = old_schema
    with postgres_schema_url() as fresh_url:
        _, fresh = split_url(fresh_url)
        assert fresh is not None
        for opened in (url, fresh_url):  # migrated from schema 4, and made new
            backend = await PostgresBackend.connect(opened, StoreConfig())
            await backend.aclose()
        assert await _row_types(dsn, migrated) == ROW_TYPES
        assert await _row_types(dsn, fresh) == ROW_TYPES
