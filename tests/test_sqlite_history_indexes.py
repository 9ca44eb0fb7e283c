"""SQLite reads history through indexes: the query plans say so, and older files get the indexes."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import msgspec

from eventstore import TaskScope, open_store
from eventstore.log.backends.rows import EventFilter
from eventstore.log.backends.sqlite.reads import (
    _SELECT_LATEST_PER_KEY,
    _SELECT_MARKERS,
    _events_query,
)
from eventstore.log.backends.sqlite.schema import MIGRATIONS
from eventstore.log.events import KeySet, encode_event
from eventstore.log.scopes import scope_key


def plan(db: Path, sql: str, params: object) -> str:
    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()  # type: ignore[arg-type]
    return "\n".join(row[3] for row in rows)


async def test_history_queries_seek_indexes_instead_of_scanning(tmp_path: Path) -> None:
    db = tmp_path / "trail.db"
    async with open_store(f"sqlite:///{db}") as store:
        await store.task_store("d", "r", "t", try_number=1).set("a", 1)
    latest = plan(db, _SELECT_LATEST_PER_KEY, {"scope": 1, "after": 0, "through": 10})
    assert "SCAN events" not in latest
    assert "events_by_scope_key (scope_id=? AND key=? AND seq<?)" in latest
    last_clear = plan(db, _SELECT_MARKERS, {"scopes": "[1]", "kinds": '["clear"]', "through": 10})
    assert "events_by_scope_key (scope_id=? AND key=?" in last_clear
    for where, index in [
        (EventFilter(try_number=1, descending=True, limit=1), "events_by_scope_try"),
        # A time is found by a search over the versions: no per-event time index to write.
        (EventFilter(until=5, descending=True, limit=1), "events_by_scope_version"),
        (EventFilter(through_version=3, descending=True, limit=1), "events_by_scope_version"),
    ]:
        found = plan(db, *_events_query(1, where))
        assert index in found, found
        assert "TEMP B-TREE" not in found, found


async def test_a_file_made_without_the_history_indexes_gets_them(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    with closing(sqlite3.connect(db)) as conn:  # as schema version 1 left it, with one write
        for statement in MIGRATIONS[0].statements:
            conn.execute(statement)
        conn.execute("UPDATE schema_version SET version = 1")
        conn.execute(
            "INSERT INTO scopes VALUES (1, ?, 1, 1, 1767225600000000, 'd', 'r', 't', -1)",
            (scope_key(TaskScope("d", "r", "t")),),
        )
        payload = encode_event(KeySet(key="a", value=msgspec.Raw(b"1")))
        conn.execute(
            "INSERT INTO events VALUES (1, 1, 1, 'set', 'a', NULL, 1767225600000000, 1, 'task', ?)",
            (payload,),
        )
        conn.execute("UPDATE log_head SET last_seq = 1, last_recorded_at = 1767225600000000")
        conn.commit()
    async with open_store(f"sqlite:///{db}") as store:
        history = store.history(store.task_store("d", "r", "t").scope)
        assert len(await history.events(try_number=1)) == 1
    with closing(sqlite3.connect(db)) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    # The try index now holds one entry per try; the time index is gone (schema step 5).
    assert "events_by_scope_try" in names
    assert "events_by_scope_time" not in names
