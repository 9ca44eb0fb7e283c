"""A log file made by the release before schema step 5 (per-event try and time indexes) is
migrated in place, and every history question gets the answer it got before."""

from __future__ import annotations

import shutil
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Final

import pytest

from eventstore.log.backends.sqlite.backend import SCHEMA_VERSION
from tests.migrated_log import TRIES, check_every_history_question

# Made by tests/fixtures/make_schema_4_tries.py with tasktrail at main 04fa00a.
FIXTURE: Final = Path(__file__).parent / "fixtures" / "schema-4-tries.db"


@pytest.fixture
def old_file(tmp_path: Path) -> Path:
    path = tmp_path / "old.db"
    shutil.copy(FIXTURE, path)
    return path


async def test_a_schema_4_file_answers_every_history_question_after_the_migration(
    old_file: Path,
) -> None:
    await check_every_history_question(f"sqlite:///{old_file}")
    with closing(sqlite3.connect(old_file)) as conn:
        (version,) = conn.execute("SELECT version FROM schema_version").fetchone()
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        tries = conn.execute("SELECT * FROM tries ORDER BY scope_id, try_number").fetchall()
    assert version == SCHEMA_VERSION
    assert "events_by_scope_time" not in indexes
    assert tries == TRIES
