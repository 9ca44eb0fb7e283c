"""A PostgreSQL log made by the release before schema step 5 (per-event try and time indexes) is
migrated in place, and every history question gets the answer it got before."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

import asyncpg
import pytest
from conftest import postgres_schema_url

from eventstore.log.backends.postgres.backend import SCHEMA_VERSION, split_url
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
