"""What a log made before schema step 5 (tests/fixtures: schema-4-tries.db and
postgres-schema-4-tries.sql, the same story) answers after the migration, on either database."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

import pytest

from eventstore import StaleAttemptError, open_store
from projections import At

MINUTE: Final = 60_000_000
START: Final = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
# Where each try of the story starts, as the migration records it: (scope_id, try, version).
TRIES: Final = [(1, 1, 1), (1, 2, 5), (1, 3, 11), (1, 4, 15), (2, 1, 1)]


def at_minute(n: int) -> datetime:
    return datetime.fromtimestamp((START + n * MINUTE) / 1e6, tz=UTC)


async def check_every_history_question(url: str) -> None:
    """The story's history as it read before the migration; then a stale try is fenced and a
    new try writes as before."""
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
