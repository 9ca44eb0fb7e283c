"""The mirror written behind the log: a write returns once the log has it, the mirror writer puts
it into Airflow's tables; a caller's rollback cannot undo it, a crash before it is caught up, a
failure to write it is reported and loses nothing of the log."""

from __future__ import annotations

import json
import logging
import signal
import sqlite3
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from airflow.models.task_state_store import TaskStateStoreModel
from airflow.models.taskinstance import TaskInstance
from airflow.state import TaskScope
from airflow_support import DAG_ID, RUN_ID, AirflowDatabase
from sqlalchemy import select, update

from eventstore.airflow import TasktrailBackend

INGEST = TaskScope(DAG_ID, RUN_ID, "ingest")


@pytest.fixture
def db(airflow_db: AirflowDatabase) -> AirflowDatabase:
    airflow_db.add_task_instance("ingest")
    return airflow_db


def rows(db: AirflowDatabase) -> dict[str, tuple[str, datetime | None]]:
    """Airflow's table, read directly once this process's mirror writes are written."""
    TasktrailBackend.wait_for_mirror()
    t = TaskStateStoreModel
    with db.session() as session:
        return {
            key: (value, expires)
            for key, value, expires in session.execute(select(t.key, t.value, t.expires_at))
        }


def write(backend: TasktrailBackend, db: AirflowDatabase, key: str, text: str) -> None:
    with db.session() as session:
        backend.set(INGEST, key, text, session=session)
        session.commit()


def test_a_callers_rollback_after_the_log_has_the_write_keeps_the_mirror_row(
    trail_url: str, db: AirflowDatabase
) -> None:
    backend = TasktrailBackend(trail_url)
    with db.session() as session:
        backend.set(INGEST, "offset", "7", session=session)
        # The caller's session wrote nothing: its commit would only end what it read.
        assert not session.connection().connection.dbapi_connection.in_transaction  # type: ignore[union-attr]
        session.rollback()
    assert backend.get(INGEST, "offset") == "7"
    with db.session() as session:
        assert backend.check_mirror(session=session).ok
    assert rows(db) == {"offset": ("7", None)}


def test_a_change_the_callers_own_transaction_makes_is_not_undone_by_a_queued_one(
    trail_url: str, db: AirflowDatabase
) -> None:
    """As when Airflow marks a task successful with clear_on_success: the session that updates
    the task instance clears its store, while the task's last set may still be queued."""
    backend = TasktrailBackend(trail_url)
    write(backend, db, "first", "1")
    with db.session() as marking:
        # The caller's transaction writes first: the mirror writer waits for its commit.
        marking.execute(update(TaskInstance).values(try_number=1))
        write(backend, db, "last", "2")  # a read-only session: queued behind `marking`
        backend.clear(INGEST, session=marking)
        marking.commit()
    assert rows(db) == {}
    with db.session() as session:
        assert backend.check_mirror(session=session).ok


def test_the_mirror_catches_up_after_a_process_is_killed_before_writing_it(
    trail_url: str, db: AirflowDatabase, tmp_path: Path
) -> None:
    database = db.url.removeprefix("sqlite:///")
    script = f"""
import os, signal, sqlite3
from airflow.state import TaskScope
from sqlalchemy import create_engine
from sqlalchemy.orm import Session
from eventstore.airflow import TasktrailBackend

engine = create_engine({db.url!r})
backend = TasktrailBackend({trail_url!r})
scope = TaskScope({DAG_ID!r}, {RUN_ID!r}, "ingest")
with Session(engine) as session:
    backend.set(scope, "a", "1", session=session)
    session.commit()
TasktrailBackend.wait_for_mirror()
# Another connection holds Airflow's database: the mirror writer cannot write from now on.
lock = sqlite3.connect({database!r}, isolation_level=None)
lock.execute("BEGIN IMMEDIATE")
with Session(engine) as session:
    backend.set(scope, "b", "2", session=session)
    backend.delete(scope, "a", session=session)
    session.commit()
print("in the log", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert done.stdout == "in the log\n"
    backend = TasktrailBackend(trail_url)
    assert (backend.get(INGEST, "a"), backend.get(INGEST, "b")) == (None, "2")
    assert rows(db) == {"a": ("1", None)}  # the mirror is behind the log
    # This process's first write through the backend: the scopes written since the watermark
    # are repaired before it.
    write(backend, db, "c", "3")
    assert rows(db) == {"b": ("2", None), "c": ("3", None)}


def test_a_failed_mirror_write_is_reported_and_the_log_keeps_the_write(
    trail_url: str, db: AirflowDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    backend = TasktrailBackend(trail_url)
    write(backend, db, "a", "1")
    TasktrailBackend.wait_for_mirror()
    lock = sqlite3.connect(db.url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        lock.execute("BEGIN IMMEDIATE")
        write(backend, db, "b", "2")  # queued: the writer waits for the lock
        lock.execute("DROP TABLE task_state_store")
        lock.execute("COMMIT")
    finally:
        lock.close()
    with caplog.at_level(logging.WARNING, logger="tasktrail.airflow"):
        TasktrailBackend.wait_for_mirror()
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "key 'b'" in warning
    assert "python -m eventstore.airflow mirror --repair" in warning
    assert backend.get(INGEST, "b") == "2"
    assert json.loads(backend.get(INGEST, "a") or "null") == 1


def test_a_stale_write_raises_and_queues_nothing(trail_url: str, db: AirflowDatabase) -> None:
    from eventstore import StaleAttemptError

    backend = TasktrailBackend(trail_url)
    db.set_try("ingest", 2)
    write(backend, db, "offset", "2")
    db.set_try("ingest", 1)
    with pytest.raises(StaleAttemptError), db.session() as session:
        backend.set(INGEST, "offset", "1", session=session)
    assert rows(db) == {"offset": ("2", None)}


def test_the_watermark_moves_forward_only(db: AirflowDatabase) -> None:
    """Several API servers share it: one that is behind never takes it back."""
    from eventstore.airflow.catchup import read_watermark, write_watermark

    assert read_watermark(db.engine) is None
    for through in (10, 30, 20):
        with db.engine.begin() as connection:
            write_watermark(connection, through)
    assert read_watermark(db.engine) == 30


def test_requests_one_at_a_time_share_a_commit_of_airflows_database(
    trail_url: str, db: AirflowDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch gathers for a while after its first change; waiting for the mirror writes it at
    once (with this linger of an hour, a wait that did not would not return)."""
    from eventstore.airflow import writer

    batches: list[int] = []
    write_batch = writer.MirrorWriter._write

    def counted(self: writer.MirrorWriter, batch: list[Any], through: int) -> None:
        batches.append(len(batch))
        write_batch(self, batch, through)

    monkeypatch.setattr(writer, "LINGER", 3600.0)
    monkeypatch.setattr(writer.MirrorWriter, "_write", counted)
    backend = TasktrailBackend(trail_url)
    write(backend, db, "a", "0")  # the writer started, and its catch-up done
    assert rows(db) == {"a": ("0", None)}
    batches.clear()
    for key in ("a", "b", "c"):
        write(backend, db, key, "1")
    assert rows(db) == dict.fromkeys(("a", "b", "c"), ("1", None))
    assert batches == [3]


def test_a_process_that_exits_writes_the_batch_it_was_gathering(
    trail_url: str, db: AirflowDatabase
) -> None:
    script = f"""
from airflow.state import TaskScope
from sqlalchemy import create_engine
from sqlalchemy.orm import Session
from eventstore.airflow import TasktrailBackend, writer

writer.LINGER = 3600.0
engine = create_engine({db.url!r})
backend = TasktrailBackend({trail_url!r})
with Session(engine) as session:
    backend.set(TaskScope({DAG_ID!r}, {RUN_ID!r}, "ingest"), "a", "1", session=session)
    session.commit()
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    t = TaskStateStoreModel
    with db.session() as session:
        assert session.execute(select(t.key, t.value)).all() == [("a", "1")]
