"""A PostgreSQL log made by the release before schema step 5 (per-event try and time indexes) is
migrated in place, and every history question gets the answer it got before."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import asyncpg
import pytest
from conftest import postgres_schema_url

from eventstore import StaleAttemptError, open_store
from eventstore.log.backends.postgres.backend import SCHEMA_VERSION, split_url
from projections import At

# Made by tests/fixtures/make_postgres_schema_4_tries.py with tasktrail at main bb1f6ef: the
# schema `tasktrail_schema_4_fixture`, dumped by pg_dump.
FIXTURE: Final = Path(__file__).parent / "fixtures" / "postgres-schema-4-tries.sql"
FIXTURE_SCHEMA: Final = "tasktrail_schema_4_fixture"
MINUTE: Final = 60_000_000
START: Final = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z


def at_minute(n: int) -> datetime:
    return datetime.fromtimestamp((START + n * MINUTE) / 1e6, tz=UTC)


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
    async with open_store(url) as store:
        h = store.history(store.task_store("d", "r", "t").scope)
        assert [e.seq for e in await h.events(try_number=1)] == [1, 3, 5]
        assert [e.seq for e in await h.events(try_number=2)] == [8, 10, 12, 15, 16]
        assert await h.events(try_number=4) == []
        spans = await h.events(since=at_minute(5), until=at_minute(7))
        assert [e.seq for e in spans] == [8, 10, 12]
        assert [e.seq for e in await h.events(after_seq=13, limit=2)] == [14, 15]
        assert [e.seq for e in await h.timeline("progress")] == [1, 3, 5, 8, 10, 12, 17, 19, 21]
        assert await h.state(At.end_of_try(1)) == {"progress": {"try": 1, "rows": 2}}
        assert await h.state(At.start_of_try(2)) == {
            "progress": {"try": 1, "rows": 2},
            "untracked": 1,
        }
        assert await h.state(At.end_of_try(2)) == {"after_clear": True}
        assert await h.state(At.time(at_minute(5))) == {
            "progress": {"try": 2, "rows": 0},
            "untracked": 1,
        }
        assert await h.state(At.seq(13)) == {"progress": {"try": 2, "rows": 2}, "untracked": 1}
        assert await h.state(At.version(9)) == {}
        assert [t.try_number for t in await h.tries()] == [1, 2, 3]
        # Fencing and new tries go on as before.
        with pytest.raises(StaleAttemptError):
            await store.task_store("d", "r", "t", try_number=2).set("late", 1)
        await store.task_store("d", "r", "t", try_number=4).set("progress", "four")
        assert await h.state(At.end_of_try(4)) == {
            "progress": "four",
            "after_clear": True,
            "untracked": 3,
        }
        assert [e.seq for e in await h.events(try_number=4)] == [25]
        assert (await store.verify()).ok
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
    assert [tuple(r) for r in tries] == [(1, 1, 1), (1, 2, 5), (1, 3, 11), (1, 4, 15), (2, 1, 1)]
