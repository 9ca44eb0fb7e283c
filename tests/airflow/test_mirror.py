"""Airflow's tables as a projection of tasktrail's log: what the backend writes into them, how
sensitive and sealed values are kept out, and the check and repair of the mirror."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest
from airflow.models.task_state_store import TaskStateStoreModel
from airflow.state import TaskScope
from airflow.state.metastore import MetastoreBackend
from airflow_support import DAG_ID, RUN_ID, AirflowDatabase
from sqlalchemy import delete, select, update

from eventstore import TaskScope as TrailTask
from eventstore import open_store
from eventstore.airflow import MASK, TasktrailBackend
from eventstore.log.master_keys import generate_master_key

INGEST = TaskScope(DAG_ID, RUN_ID, "ingest")


def rows(db: AirflowDatabase) -> dict[str, tuple[str, datetime | None]]:
    # Read straight from Airflow's table, not through a path that reads the mirror: once the
    # mirror writer has written what this process queued.
    TasktrailBackend.wait_for_mirror()
    t = TaskStateStoreModel
    with db.session() as session:
        found = session.execute(select(t.key, t.value, t.expires_at).where(t.task_id == "ingest"))
        return {
            key: (value, None if expires is None else expires.replace(tzinfo=UTC))
            for key, value, expires in found
        }


@pytest.fixture
def db(airflow_db: AirflowDatabase) -> AirflowDatabase:
    airflow_db.add_task_instance("ingest")
    return airflow_db


def write(
    backend: TasktrailBackend, db: AirflowDatabase, key: str, text: str, **kw: object
) -> None:
    with db.session() as session:
        backend.set(INGEST, key, text, session=session, **kw)  # type: ignore[arg-type]
        session.commit()


def test_a_task_write_is_mirrored_with_its_value_and_expiry(
    trail_url: str, db: AirflowDatabase
) -> None:
    backend = TasktrailBackend(trail_url)
    expires = datetime(2099, 1, 2, 3, 4, 5, tzinfo=UTC)
    write(backend, db, "offset", "12", expires_at=expires)
    write(backend, db, "job_id", '"spark-1"')
    assert rows(db) == {"offset": ("12", expires), "job_id": ('"spark-1"', None)}
    with db.session() as session:
        backend.delete(INGEST, "offset", session=session)
        session.commit()
    assert set(rows(db)) == {"job_id"}
    with db.session() as session:
        backend.clear(INGEST, session=session)
        session.commit()
    assert rows(db) == {}


@pytest.mark.parametrize(
    ("mirror", "shown"),
    [("masked", json.dumps(MASK)), ("values", '"hunter2"'), ("off", None)],
)
def test_a_sensitive_key_is_kept_out_of_airflows_table_as_the_setting_says(
    trail_url: str, db: AirflowDatabase, mirror: str, shown: str | None
) -> None:
    backend = TasktrailBackend(trail_url, mirror=mirror)  # type: ignore[arg-type]
    write(backend, db, "db_password", '"hunter2"')
    write(backend, db, "rows", "5")
    expected = {"rows": ("5", None)}
    if shown is not None:
        expected["db_password"] = (shown, None)
    assert rows(db) == expected
    # tasktrail keeps the value, written sensitive: masked for auditors, given to the task.
    assert backend.get(INGEST, "db_password") == '"hunter2"'
    [event] = anyio.run(_events, trail_url, "db_password")
    assert event.sensitive


def test_the_default_setting_masks(trail_url: str, db: AirflowDatabase) -> None:
    backend = TasktrailBackend(trail_url)
    assert backend.mirror == "masked"
    write(backend, db, "API_TOKEN", '"t-1"')
    assert rows(db) == {"API_TOKEN": (json.dumps(MASK), None)}


@pytest.mark.parametrize(
    ("key", "sensitive"),
    [
        ("password", True),
        ("db-password", True),
        ("Access Token", True),
        ("aws_secret_access_key", True),
        ("private_key", True),
        ("iban_of_customer", True),  # tasktrail's setting, below
        ("customer_pin", True),  # [core] sensitive_var_conn_names
        ("offset", False),
        ("job_id", False),
        ("tokenizer_batch", True),  # a substring match, as Airflow's masker does
    ],
)
def test_keys_are_sensitive_by_name_as_airflow_masks_variables(
    trail_url: str, monkeypatch: pytest.MonkeyPatch, key: str, sensitive: bool
) -> None:
    monkeypatch.setenv("AIRFLOW__CORE__SENSITIVE_VAR_CONN_NAMES", "pin,ssn")
    monkeypatch.setenv("AIRFLOW__TASKTRAIL__SENSITIVE_KEYS", "iban")
    assert TasktrailBackend(trail_url).is_sensitive(key) is sensitive


def test_an_encrypted_store_puts_no_value_into_airflows_table(
    trail_url: str, db: AirflowDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKTRAIL_MASTER_KEYS", generate_master_key())
    backend = TasktrailBackend(trail_url)
    write(backend, db, "offset", "12")
    assert rows(db) == {"offset": (json.dumps(MASK), None)}
    assert backend.get(INGEST, "offset") == "12"


def test_an_unknown_mirror_setting_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__TASKTRAIL__MIRROR", "plain")
    with pytest.raises(ValueError, match="mirror must be one of values, masked, off"):
        TasktrailBackend("memory://")


def test_the_mirror_check_finds_what_differs_and_the_repair_puts_it_right(
    trail_url: str, db: AirflowDatabase
) -> None:
    backend = TasktrailBackend(trail_url)
    for key, text in [("a", "1"), ("b", "2"), ("secret_c", '"x"')]:
        write(backend, db, key, text)
    with db.session() as session:
        assert backend.check_mirror(session=session).ok
    t = TaskStateStoreModel
    with db.session() as session, session.begin():
        session.execute(delete(t).where(t.key == "a"))
        session.execute(update(t).where(t.key == "b").values(value="99"))
        session.execute(update(t).where(t.key == "secret_c").values(value='"x"'))
    with db.session() as session:
        report = backend.check_mirror(session=session)
    assert not report.ok
    assert [p.split("key ")[1] for p in report.missing] == ["'a'"]
    assert sorted(p.split("key ")[1] for p in report.stale) == ["'b'", "'secret_c'"]
    with db.session() as session:
        backend.check_mirror(repair=True, session=session)
        session.commit()
    assert rows(db) == {"a": ("1", None), "b": ("2", None), "secret_c": (json.dumps(MASK), None)}
    with db.session() as session:
        assert backend.check_mirror(session=session).ok


def test_an_erased_scope_leaves_the_mirror_on_repair(trail_url: str, db: AirflowDatabase) -> None:
    backend = TasktrailBackend(trail_url)
    write(backend, db, "a", "1")

    async def erase() -> None:
        async with open_store(trail_url) as store:
            await store.erase(TrailTask(DAG_ID, RUN_ID, "ingest"))

    anyio.run(erase)
    with db.session() as session:
        report = backend.check_mirror(repair=True, session=session)
        session.commit()
    assert [p.split("key ")[1] for p in report.extra] == ["'a'"]
    assert rows(db) == {}


def test_cleanup_takes_the_rows_of_an_erased_scope_out_of_the_mirror(
    trail_url: str, db: AirflowDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = TasktrailBackend(trail_url)
    write(backend, db, "a", "1")

    async def erase() -> None:
        async with open_store(trail_url) as store:
            await store.erase(TrailTask(DAG_ID, RUN_ID, "ingest"))

    anyio.run(erase)
    assert set(rows(db)) == {"a"}
    # A row Airflow held before tasktrail was its backend: not tasktrail's to remove.
    with db.session() as session:
        MetastoreBackend().set(TaskScope(DAG_ID, RUN_ID, "older"), "k", "1", session=session)
        session.commit()
    # `airflow state-store clean` runs with Airflow's configured database: this test's.
    monkeypatch.setattr("airflow.state.metastore.create_session", db.session_scope)
    monkeypatch.setattr("airflow.utils.session.create_session", db.session_scope)
    backend.cleanup()
    assert rows(db) == {}
    t = TaskStateStoreModel
    with db.session() as session:
        assert session.scalars(select(t.task_id)).all() == ["older"]


def test_an_expired_row_is_left_to_cleanup_not_reported(
    trail_url: str, db: AirflowDatabase
) -> None:
    backend = TasktrailBackend(trail_url)
    write(backend, db, "old", "1", expires_at=datetime.now(UTC) - timedelta(hours=1))
    with db.session() as session:
        assert backend.check_mirror(session=session).ok


async def _events(url: str, key: str) -> list[object]:
    async with open_store(url) as store:
        events: list[object] = await store.history(TrailTask(DAG_ID, RUN_ID, "ingest")).events(
            key=key
        )
        return events


def test_cleanup_runs_tasktrail_compaction_embedded_and_through_a_service(
    backend: TasktrailBackend, trail_url: str
) -> None:
    backend.set(INGEST, "old", "1", expires_at=datetime.now(UTC) - timedelta(hours=1))
    backend.set(INGEST, "live", "2")
    backend.cleanup()
    kinds = [(e.kind, e.key) for e in anyio.run(_log, trail_url)]
    assert ("set", "old") not in kinds
    assert ("set", "live") in kinds
    assert ("compacted", None) in kinds


async def _log(url: str) -> list[Any]:
    from eventstore.log.recorded import recorded_event
    from eventstore.log.scopes import scope_from_key

    async with open_store(url) as store:
        scopes = {
            r.scope_id: scope_from_key(r.scope_key) for r in await store.backend.select_scopes()
        }
        return [
            recorded_event(row, scopes[row.scope_id])
            async for row in store.backend.select_all_events()
        ]


def test_the_mirror_command_checks_and_repairs(trail_url: str, db: AirflowDatabase) -> None:
    backend = TasktrailBackend(trail_url)
    write(backend, db, "a", "1")
    write(backend, db, "b", "2")
    env = {
        **os.environ,
        "TASKTRAIL_DB": trail_url,
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db.url,
    }
    env.pop("TASKTRAIL_URL", None)

    def mirror(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "eventstore.airflow", "mirror", *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)

    done = mirror()
    assert (done.returncode, done.stderr) == (0, "")
    assert "the mirror matches" in done.stdout
    with db.session() as session, session.begin():
        session.execute(delete(TaskStateStoreModel).where(TaskStateStoreModel.key == "a"))
    done = mirror("--json")
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["missing"] == [f"task {DAG_ID}/{RUN_ID}/ingest[-1] key 'a'"]
    assert mirror("--repair").returncode == 0
    assert rows(db) == {"a": ("1", None), "b": ("2", None)}
