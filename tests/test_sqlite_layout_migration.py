"""A log file made by the release before schema step 5 (per-event try and time indexes) is
migrated in place, and every history question gets the answer it got before."""

from __future__ import annotations

import shutil
import sqlite3
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import pytest

from eventstore import StaleAttemptError, open_store
from eventstore.log.backends.sqlite.backend import SCHEMA_VERSION
from projections import At

# Made by tests/fixtures/make_schema_4_tries.py with tasktrail at main 04fa00a.
FIXTURE: Final = Path(__file__).parent / "fixtures" / "schema-4-tries.db"
MINUTE: Final = 60_000_000
START: Final = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z


def at_minute(n: int) -> datetime:
    return datetime.fromtimestamp((START + n * MINUTE) / 1e6, tz=UTC)


@pytest.fixture
def old_file(tmp_path: Path) -> Path:
    path = tmp_path / "old.db"
    shutil.copy(FIXTURE, path)
    return path


async def test_a_schema_4_file_answers_every_history_question_after_the_migration(
    old_file: Path,
) -> None:
    async with open_store(f"sqlite:///{old_file}") as store:
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
    with closing(sqlite3.connect(old_file)) as conn:
        (version,) = conn.execute("SELECT version FROM schema_version").fetchone()
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        tries = conn.execute("SELECT * FROM tries ORDER BY scope_id, try_number").fetchall()
    assert version == SCHEMA_VERSION
    assert "events_by_scope_time" not in indexes
    assert tries == [(1, 1, 1), (1, 2, 5), (1, 3, 11), (1, 4, 15), (2, 1, 1)]
