"""TasktrailBackend through Airflow's BaseStoreBackend interface: the calls Airflow makes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest
from airflow.models.task_state_store import TaskStateStoreModel
from airflow.models.taskinstance import TaskInstance
from airflow.sdk.state import AssetScope as SdkAssetScope
from airflow.sdk.state import TaskScope as SdkTaskScope
from airflow.state import AssetScope, BaseStoreBackend, TaskScope, resolve_state_backend
from airflow_support import DAG_ID, RUN_ID, AirflowDatabase
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from eventstore import AssetScope as TrailAsset
from eventstore import RecordedEvent, StaleAttemptError, open_store
from eventstore import TaskScope as TrailTask
from eventstore.airflow import TasktrailBackend
from eventstore.log.errors import ConfigError, ValueTooLargeError
from eventstore.log.recorded import recorded_event
from eventstore.log.scopes import scope_from_key
from eventstore.service.auth import make_token

INGEST = TaskScope(DAG_ID, RUN_ID, "ingest")


def events_of(url: str) -> list[RecordedEvent]:
    """Every event of the log, oldest first, read the way tasktrail's history reads them."""

    async def read() -> list[RecordedEvent]:
        async with open_store(url) as store:
            scopes = {
                r.scope_id: scope_from_key(r.scope_key) for r in await store.backend.select_scopes()
            }
            return [
                recorded_event(row, scopes[row.scope_id])
                async for row in store.backend.select_all_events()
            ]

    return anyio.run(read)


def verify_ok(url: str) -> bool:
    async def run() -> bool:
        async with open_store(url) as store:
            return (await store.verify()).ok

    return anyio.run(run)


def test_backend_is_accepted_by_airflow_as_the_state_store_backend(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIRFLOW__STATE_STORE__BACKEND", "eventstore.airflow.TasktrailBackend")
    assert resolve_state_backend() is TasktrailBackend
    assert issubclass(TasktrailBackend, BaseStoreBackend)


def test_importing_eventstore_does_not_import_airflow() -> None:
    code = "import sys, eventstore; print('airflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_store_location_comes_from_tasktrail_db(
    monkeypatch: pytest.MonkeyPatch, trail_url: str
) -> None:
    monkeypatch.setenv("TASKTRAIL_DB", trail_url)
    monkeypatch.delenv("TASKTRAIL_URL", raising=False)
    assert TasktrailBackend().url == trail_url


def test_store_defaults_to_a_file_in_airflow_home(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.configuration import AIRFLOW_HOME

    monkeypatch.delenv("TASKTRAIL_DB", raising=False)
    monkeypatch.delenv("TASKTRAIL_URL", raising=False)
    assert TasktrailBackend().url == f"sqlite:///{AIRFLOW_HOME}/tasktrail.db"


def test_a_service_comes_from_tasktrail_url_and_tasktrail_token(
    monkeypatch: pytest.MonkeyPatch, admin_token: str
) -> None:
    monkeypatch.delenv("TASKTRAIL_DB", raising=False)
    monkeypatch.setenv("TASKTRAIL_URL", "http://127.0.0.1:8750")
    monkeypatch.setenv("TASKTRAIL_TOKEN", admin_token)
    backend = TasktrailBackend()
    assert (backend.url, backend.token) == ("http://127.0.0.1:8750", admin_token)
    assert admin_token not in repr(backend)


@pytest.mark.parametrize(
    ("env", "error"),
    [
        ({"TASKTRAIL_URL": "http://127.0.0.1:8750"}, "TASKTRAIL_TOKEN is not"),
        (
            {"TASKTRAIL_URL": "http://127.0.0.1:8750", "TASKTRAIL_DB": "sqlite:///x.db"},
            "unset one of them",
        ),
        ({"TASKTRAIL_URL": "sqlite:///x.db", "TASKTRAIL_TOKEN": "t"}, "goes in TASKTRAIL_DB"),
    ],
)
def test_a_service_misconfigured_is_refused_with_the_fix(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], error: str
) -> None:
    for name in ("TASKTRAIL_URL", "TASKTRAIL_TOKEN", "TASKTRAIL_DB"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=error):
        TasktrailBackend()


@pytest.mark.parametrize("role", ["task", "auditor"])
def test_a_token_that_cannot_write_every_task_is_refused(
    role: str, service_secret: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = {"dag": DAG_ID, "run": RUN_ID, "task": "ingest"} if role == "task" else {}
    token = make_token(service_secret.encode(), role, **task)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=f"is a {role} token.*--role admin"):
        TasktrailBackend("http://127.0.0.1:8750", token=token)


# -- values ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "spark-123",
        "",
        0,
        -7,
        2**70,
        0.1,
        -0.0,
        1e-7,
        1e300,
        True,
        False,
        [],
        {},
        [1, "two", 3.5, None, {"nested": None}],
        {"z": 1, "a": {"b": [True, 2]}},
        "üñíçødé ☃ \u2028 \x00",
        {'quote"d': "back\\slash", "/": "slash/key"},
    ],
)
def test_get_returns_the_json_text_airflow_set(backend: TasktrailBackend, value: Any) -> None:
    text = json.dumps(value)
    backend.set(INGEST, "k", text)
    assert backend.get(INGEST, "k") == text


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=12,
).filter(lambda v: v is not None)


@settings(max_examples=60, deadline=None)
@given(value=json_values)
def test_any_json_value_round_trips_as_the_same_text(value: Any) -> None:
    backend = TasktrailBackend("memory://")
    text = json.dumps(value)
    backend.set(INGEST, "k", text)
    assert backend.get(INGEST, "k") == text


def test_values_are_stored_as_json_values_not_as_text(
    backend: TasktrailBackend, trail_url: str
) -> None:
    backend.set(INGEST, "progress", json.dumps({"rows": 5}))
    [event] = events_of(trail_url)
    assert event.value == {"rows": 5}


@pytest.mark.parametrize(
    ("text", "error"),
    [("NaN", "NaN or Infinity"), ("null", "cannot be None"), ("{not json", "not JSON text")],
)
def test_a_value_tasktrail_cannot_keep_is_refused_and_nothing_written(
    backend: TasktrailBackend, trail_url: str, text: str, error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        backend.set(INGEST, "k", text)
    assert events_of(trail_url) == []


def test_get_of_an_absent_key_is_none(backend: TasktrailBackend) -> None:
    assert backend.get(INGEST, "never-set") is None


def test_keys_with_slashes_work(backend: TasktrailBackend) -> None:
    backend.set(INGEST, "s3://bucket/key", '"x"')
    assert backend.get(INGEST, "s3://bucket/key") == '"x"'


def test_large_values_are_kept_as_airflow_lets_them_through(
    backend: TasktrailBackend, mode: str
) -> None:
    text = json.dumps("x" * 100_000)
    if mode == "remote":
        # The service keeps its own value limit (64 KiB by default) for every client.
        with pytest.raises(ValueTooLargeError, match="over the limit of 65535"):
            backend.set(INGEST, "big", text)
        return
    backend.set(INGEST, "big", text)
    assert backend.get(INGEST, "big") == text


# -- expiry ------------------------------------------------------------------------------------


def test_the_workers_absolute_expiry_is_kept_exactly(
    backend: TasktrailBackend, trail_url: str
) -> None:
    expires = datetime(2099, 3, 4, 5, 6, 7, 891_011, tzinfo=UTC)
    backend.set(INGEST, "k", "1", expires_at=expires)
    [event] = events_of(trail_url)
    assert event.expires_at == expires


def test_no_expiry_means_never_expires(backend: TasktrailBackend, trail_url: str) -> None:
    backend.set(INGEST, "job_id", '"spark-1"', expires_at=None)
    [event] = events_of(trail_url)
    assert event.expires_at is None


def test_an_expired_key_reads_as_absent(backend: TasktrailBackend) -> None:
    backend.set(INGEST, "k", "1", expires_at=datetime.now(UTC) - timedelta(seconds=1))
    backend.set(INGEST, "live", "2", expires_at=datetime.now(UTC) + timedelta(hours=1))
    assert backend.get(INGEST, "k") is None
    assert backend.get(INGEST, "live") == "2"


def test_a_naive_expiry_is_taken_as_utc(backend: TasktrailBackend, trail_url: str) -> None:
    backend.set(INGEST, "k", "1", expires_at=datetime(2099, 1, 1, 12))
    [event] = events_of(trail_url)
    assert event.expires_at == datetime(2099, 1, 1, 12, tzinfo=UTC)


# -- delete and clear ----------------------------------------------------------------------------


def test_delete_removes_one_key_and_an_absent_key_appends_nothing(
    backend: TasktrailBackend, trail_url: str
) -> None:
    backend.set(INGEST, "a", "1")
    backend.set(INGEST, "b", "2")
    backend.delete(INGEST, "a")
    backend.delete(INGEST, "a")
    backend.delete(INGEST, "never-set")
    assert backend.get(INGEST, "a") is None
    assert backend.get(INGEST, "b") == "2"
    assert [e.kind for e in events_of(trail_url)] == ["set", "set", "delete"]


def test_clear_removes_only_its_own_map_index(backend: TasktrailBackend) -> None:
    parts = [TaskScope(DAG_ID, RUN_ID, "load", map_index=i) for i in range(3)]
    for i, part in enumerate(parts):
        backend.set(part, "rows", str(i))
    backend.clear(parts[1])
    assert [backend.get(p, "rows") for p in parts] == ["0", None, "2"]


def test_clear_of_all_map_indices_clears_every_index_and_no_other_task(
    backend: TasktrailBackend, trail_url: str
) -> None:
    parts = [TaskScope(DAG_ID, RUN_ID, "load", map_index=i) for i in range(3)]
    for i, part in enumerate(parts):
        backend.set(part, "rows", str(i))
    backend.set(INGEST, "offset", "9")
    backend.clear(parts[0], all_map_indices=True)
    assert [backend.get(p, "rows") for p in parts] == [None, None, None]
    assert backend.get(INGEST, "offset") == "9"
    clears = [e for e in events_of(trail_url) if e.kind == "clear"]
    assert len(clears) == 3
    assert all(e.try_number is None for e in clears)  # the UI or CLI clears, not a try


def test_clearing_an_empty_scope_appends_nothing(backend: TasktrailBackend, trail_url: str) -> None:
    # clear_on_success clears every successful task instance, written to or not.
    backend.clear(INGEST)
    backend.clear(TaskScope(DAG_ID, RUN_ID, "load", map_index=4), all_map_indices=True)
    backend.set(INGEST, "k", "1")
    backend.clear(INGEST)
    backend.clear(INGEST)
    assert [e.kind for e in events_of(trail_url)] == ["set", "clear"]
    assert verify_ok(trail_url)


# -- the try and the actor ---------------------------------------------------------------------


def test_every_write_carries_the_running_try_and_the_airflow_actor(
    backend: TasktrailBackend, trail_url: str, airflow_db: AirflowDatabase, actor: str
) -> None:
    airflow_db.add_task_instance("ingest", try_number=1)
    with airflow_db.session() as session:
        backend.set(INGEST, "offset", "1", session=session)
        backend.set(INGEST, "scratch", "true", session=session)
    airflow_db.set_try("ingest", 2)
    with airflow_db.session() as session:
        assert backend.get(INGEST, "offset", session=session) == "1"
        backend.set(INGEST, "offset", "2", session=session)
        backend.delete(INGEST, "scratch", session=session)
        backend.clear(INGEST, session=session)
    events = events_of(trail_url)
    assert [(e.kind, e.try_number) for e in events] == [
        ("set", 1),
        ("set", 1),
        ("set", 2),
        ("delete", 2),
        ("clear", 2),
    ]
    assert {e.actor for e in events} == {actor}


def ti_id_of(airflow_db: AirflowDatabase, task_id: str) -> Any:
    with airflow_db.session() as session:
        return session.scalar(select(TaskInstance.id).where(TaskInstance.task_id == task_id))


def test_a_request_that_loaded_its_task_instance_is_asked_nothing_more(
    trail_url: str, airflow_db: AirflowDatabase
) -> None:
    """As the execution API calls the backend: its route loads the task instance by id (its
    DagRun joined) to name the scope. The try and the DagRun come from there, with no query."""
    airflow_db.add_task_instance("ingest", try_number=3)
    ti_id = ti_id_of(airflow_db, "ingest")
    backend = TasktrailBackend(trail_url)
    statements: list[str] = []
    with airflow_db.session() as session:
        ti = session.get(TaskInstance, ti_id)
        assert ti is not None
        connection = session.connection()
        event.listen(connection, "before_cursor_execute", lambda *a: statements.append(a[2]))
        backend.set(INGEST, "offset", "7", session=session)
        backend.set(INGEST, "job", "1", session=session)
        backend.delete(INGEST, "offset", session=session)
        backend.clear(INGEST, session=session)
        backend.set(INGEST, "last", "2", session=session)
        session.commit()
        run_id = ti.dag_run.id
    assert statements == []
    events = events_of(trail_url)
    assert [(e.kind, e.try_number) for e in events] == [
        ("set", 3),
        ("set", 3),
        ("delete", 3),
        ("clear", 3),
        ("set", 3),
    ]
    TasktrailBackend.wait_for_mirror()
    t = TaskStateStoreModel
    with airflow_db.session() as session:
        assert session.execute(select(t.key, t.dag_run_id)).all() == [("last", run_id)]


def test_a_task_instance_the_session_no_longer_holds_loaded_is_looked_up(
    trail_url: str, airflow_db: AirflowDatabase
) -> None:
    airflow_db.add_task_instance("ingest", try_number=1)
    ti_id = ti_id_of(airflow_db, "ingest")
    backend = TasktrailBackend(trail_url)
    with airflow_db.session() as session:
        ti = session.get(TaskInstance, ti_id)
        assert ti is not None
        session.expire(ti)  # what it held is stale now: the next try has started
        airflow_db.set_try("ingest", 2)
        backend.set(INGEST, "offset", "2", session=session)
    [event] = events_of(trail_url)
    assert event.try_number == 2


def test_a_write_of_an_older_try_is_refused_once_a_newer_try_wrote(
    backend: TasktrailBackend, airflow_db: AirflowDatabase
) -> None:
    airflow_db.add_task_instance("ingest", try_number=2)
    with airflow_db.session() as session:
        backend.set(INGEST, "offset", "2", session=session)
    airflow_db.set_try("ingest", 1)
    with airflow_db.session() as session, pytest.raises(StaleAttemptError):
        backend.set(INGEST, "offset", "1", session=session)
    assert backend.get(INGEST, "offset") == "2"


def test_each_map_index_gets_its_own_try(
    backend: TasktrailBackend, trail_url: str, airflow_db: AirflowDatabase
) -> None:
    airflow_db.add_task_instance("load", map_index=0, try_number=1)
    airflow_db.add_task_instance("load", map_index=1, try_number=3)
    with airflow_db.session() as session:
        for i in (0, 1):
            backend.set(TaskScope(DAG_ID, RUN_ID, "load", i), "rows", "1", session=session)
    assert [e.try_number for e in events_of(trail_url)] == [1, 3]


def test_without_a_session_writes_are_not_stamped_with_a_try(
    backend: TasktrailBackend, trail_url: str
) -> None:
    backend.set(INGEST, "k", "1")
    [event] = events_of(trail_url)
    assert event.try_number is None


# -- retries ------------------------------------------------------------------------------------


def test_a_retried_call_appends_nothing_more(
    backend: TasktrailBackend, trail_url: str, airflow_db: AirflowDatabase
) -> None:
    airflow_db.add_task_instance("ingest", try_number=1)
    expires = datetime.now(UTC) + timedelta(days=30)
    with airflow_db.session() as session:
        for _ in range(5):  # Airflow's retries of one call
            backend.set(INGEST, "offset", "1", expires_at=expires, session=session)
        for _ in range(5):
            backend.set(INGEST, "job_id", '"j-1"', session=session)
        for _ in range(5):
            backend.delete(INGEST, "offset", session=session)
        for _ in range(5):
            backend.clear(INGEST, session=session)
    assert [(e.kind, e.key) for e in events_of(trail_url)] == [
        ("set", "offset"),
        ("set", "job_id"),
        ("delete", "offset"),
        ("clear", None),
    ]
    assert verify_ok(trail_url)


def test_setting_a_value_again_after_other_writes_is_recorded(
    backend: TasktrailBackend, trail_url: str
) -> None:
    for text in ["1", "2", "1"]:
        backend.set(INGEST, "progress", text)
    assert [e.value for e in events_of(trail_url)] == [1, 2, 1]
    assert backend.get(INGEST, "progress") == "1"


def test_the_same_value_from_a_new_try_is_recorded(
    backend: TasktrailBackend, trail_url: str, airflow_db: AirflowDatabase
) -> None:
    airflow_db.add_task_instance("ingest", try_number=1)
    with airflow_db.session() as session:
        backend.set(INGEST, "job_id", '"j-1"', session=session)
    airflow_db.set_try("ingest", 2)
    with airflow_db.session() as session:
        backend.set(INGEST, "job_id", '"j-1"', session=session)
    assert [e.try_number for e in events_of(trail_url)] == [1, 2]


def test_the_same_value_with_another_expiry_is_recorded(
    backend: TasktrailBackend, trail_url: str
) -> None:
    soon = datetime.now(UTC) + timedelta(hours=1)
    backend.set(INGEST, "k", "1", expires_at=soon)
    backend.set(INGEST, "k", "1", expires_at=soon + timedelta(hours=1))
    assert len(events_of(trail_url)) == 2


# -- scopes --------------------------------------------------------------------------------------


def test_core_and_sdk_task_scopes_are_the_same_scope(backend: TasktrailBackend) -> None:
    sdk = SdkTaskScope(DAG_ID, RUN_ID, "ingest")
    assert sdk != INGEST  # different classes in Airflow
    backend.set(sdk, "k", '"from the worker"')
    assert backend.get(INGEST, "k") == '"from the worker"'
    backend.delete(INGEST, "k")
    assert backend.get(sdk, "k") is None


def test_any_object_with_the_fields_of_a_scope_is_recognised(backend: TasktrailBackend) -> None:
    @dataclass(frozen=True)
    class MyTaskScope:
        dag_id: str
        run_id: str
        task_id: str
        map_index: int = -1

    backend.set(MyTaskScope(DAG_ID, RUN_ID, "ingest"), "k", "1")
    assert backend.get(INGEST, "k") == "1"


def test_something_that_is_no_scope_is_refused(backend: TasktrailBackend) -> None:
    with pytest.raises(TypeError, match="not an Airflow task or asset scope"):
        backend.get(object(), "k")


def test_asset_ids_are_resolved_to_the_assets_name_and_uri(
    backend: TasktrailBackend, trail_url: str, airflow_db: AirflowDatabase
) -> None:
    airflow_db.add_asset(7, "warehouse.orders", "s3://warehouse/orders")
    scope = AssetScope(asset_id=7)
    with airflow_db.session() as session:
        backend.set(scope, "watermark", "1042", session=session)
        assert backend.get(scope, "watermark", session=session) == "1042"
    [event] = events_of(trail_url)
    assert event.scope == TrailAsset("warehouse.orders", "s3://warehouse/orders")
    assert event.try_number is None
    assert event.expires_at is None  # asset entries never expire


def test_asset_entries_never_expire_whatever_expiry_is_passed(
    backend: TasktrailBackend, trail_url: str
) -> None:
    scope = SdkAssetScope(name="orders")
    backend.set(scope, "w", "1", expires_at=datetime.now(UTC) - timedelta(days=1))
    assert backend.get(scope, "w") == "1"


def test_asset_delete_and_clear(backend: TasktrailBackend, airflow_db: AirflowDatabase) -> None:
    airflow_db.add_asset(1, "a", "file:///a")
    airflow_db.add_asset(2, "b", "file:///b")
    a, b = AssetScope(asset_id=1), AssetScope(asset_id=2)
    with airflow_db.session() as session:
        backend.set(a, "x", "1", session=session)
        backend.set(a, "y", "2", session=session)
        backend.set(b, "x", "3", session=session)
        backend.delete(a, "x", session=session)
        assert backend.get(a, "x", session=session) is None
        backend.clear(a, all_map_indices=True, session=session)  # no effect on assets
        assert backend.get(a, "y", session=session) is None
        assert backend.get(b, "x", session=session) == "3"


def test_an_unknown_asset_id_is_an_error(
    backend: TasktrailBackend, airflow_db: AirflowDatabase
) -> None:
    with airflow_db.session() as session, pytest.raises(LookupError, match="no asset with id 99"):
        backend.get(AssetScope(asset_id=99), "k", session=session)


def test_an_asset_id_without_a_session_is_looked_up_in_airflows_own_database(
    backend: TasktrailBackend, trail_url: str, mode: str
) -> None:
    from airflow.models.asset import AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        asset = AssetModel(name=f"sessionless-{mode}", uri=f"s3://{mode}", group="asset")
        session.add(asset)
        session.flush()
        asset_id = asset.id
    backend.set(AssetScope(asset_id=asset_id), "w", "7")
    assert backend.get(AssetScope(asset_id=asset_id), "w") == "7"
    [event] = events_of(trail_url)
    assert event.scope == TrailAsset(f"sessionless-{mode}", f"s3://{mode}")


def test_an_unknown_asset_id_without_a_session_is_an_error(backend: TasktrailBackend) -> None:
    with pytest.raises(LookupError, match="no asset with id 4242"):
        backend.get(AssetScope(asset_id=4242), "k")


def test_an_asset_named_by_the_worker_is_kept_under_that_name(
    backend: TasktrailBackend, trail_url: str
) -> None:
    backend.set(SdkAssetScope(uri="s3://x"), "k", "1")
    [event] = events_of(trail_url)
    assert event.scope == TrailAsset(uri="s3://x")


# -- the sync bridge ------------------------------------------------------------------------------


def test_sync_calls_from_many_threads_all_land(backend: TasktrailBackend, trail_url: str) -> None:
    def work(n: int) -> None:
        scope = TaskScope(DAG_ID, RUN_ID, "load", map_index=n)
        for i in range(10):
            backend.set(scope, "i", str(i))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(events_of(trail_url)) == 80
    assert verify_ok(trail_url)


def test_writes_are_committed_when_the_process_exits(trail_url: str) -> None:
    code = (
        "from airflow.state import TaskScope\n"
        "from eventstore.airflow import TasktrailBackend\n"
        f"b = TasktrailBackend({trail_url!r})\n"
        "for i in range(20):\n"
        "    b.set(TaskScope('d', 'r', 't'), 'i', str(i))\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    events = events_of(trail_url)
    assert len(events) == 20
    assert events[-1].scope == TrailTask("d", "r", "t")


def test_a_forked_process_starts_its_own_event_loop(
    backend: TasktrailBackend, trail_url: str
) -> None:
    backend.set(INGEST, "parent", "1")  # the parent's loop runs in a thread the child lacks
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit code
        code = 1
        try:
            backend.set(INGEST, "child", "2")
            code = 0 if backend.get(INGEST, "parent") == "1" else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert backend.get(INGEST, "child") == "2"
    assert verify_ok(trail_url)


# -- the async methods -----------------------------------------------------------------------------


async def test_async_methods_do_what_the_sync_ones_do(
    make_backend: Callable[[], TasktrailBackend], trail_url: str, airflow_db: AirflowDatabase
) -> None:
    backend = make_backend()
    airflow_db.add_task_instance("ingest", try_number=2)
    airflow_db.add_task_instance("load", map_index=0)
    airflow_db.add_task_instance("load", map_index=1)
    airflow_db.add_asset(3, "orders", "s3://orders")
    engine = create_async_engine(airflow_db.url.replace("sqlite://", "sqlite+aiosqlite://"))
    try:
        async with AsyncSession(engine) as session:
            await backend.aset(INGEST, "k", '{"a": 1}', session=session)
            assert await backend.aget(INGEST, "k", session=session) == '{"a": 1}'
            await backend.adelete(INGEST, "k", session=session)
            assert await backend.aget(INGEST, "k", session=session) is None
            for i in (0, 1):
                scope = TaskScope(DAG_ID, RUN_ID, "load", i)
                await backend.aset(scope, "rows", str(i), session=session)
            await backend.aclear(TaskScope(DAG_ID, RUN_ID, "load", 0), session=session)
            assert backend.get(TaskScope(DAG_ID, RUN_ID, "load", 1), "rows") == "1"
            await backend.aclear(
                TaskScope(DAG_ID, RUN_ID, "load", 1), all_map_indices=True, session=session
            )
            asset = AssetScope(asset_id=3)
            await backend.aset(asset, "w", "5", session=session)
            assert await backend.aget(asset, "w", session=session) == "5"
            await backend.aclear(asset, session=session)
            expires = datetime(2099, 1, 1, tzinfo=UTC)
            await backend.aset(INGEST, "e", "1", expires_at=expires, session=session)
    finally:
        await engine.dispose()
    events = await anyio.to_thread.run_sync(events_of, trail_url)
    assert [(e.kind, e.key, e.try_number) for e in events] == [
        ("set", "k", 2),
        ("delete", "k", 2),
        ("set", "rows", 1),
        ("set", "rows", 1),
        ("clear", None, 1),
        ("clear", None, None),
        ("set", "w", None),
        ("clear", None, None),
        ("set", "e", 2),
    ]
    assert events[-1].expires_at == datetime(2099, 1, 1, tzinfo=UTC)
    assert events[6].scope == TrailAsset("orders", "s3://orders")
