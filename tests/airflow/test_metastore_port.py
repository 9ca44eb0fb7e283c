"""Airflow's own backend tests (airflow-core/tests/unit/state/test_metastore.py, 3.3), run
against TasktrailBackend.

Every case that applies to Airflow 3.3.2 is here, changed only where Airflow's test fixtures are
not available outside Airflow's repository: `session` is a session of Airflow's configured
database (rolled back at the end), `create_task_instance` gives the writer's four fields, and the
backend writes to a fresh tasktrail database per test. Reads through the backend read tasktrail;
reads of `TaskStateStoreModel`/`AssetStateStoreModel` read the mirror. The cases with
`region_id` are left out: Airflow 3.3.2's scopes have no region.

Two cases Airflow's suite runs on its backend only (expired rows backdated in Airflow's table)
are followed by their tasktrail counterpart, where the expiry is tasktrail's own.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from airflow import settings
from airflow._shared.state import AssetStateStoreWriterKind
from airflow.configuration import conf
from airflow.models.asset import AssetModel
from airflow.models.asset_state_store import AssetStateStoreModel
from airflow.models.dagrun import DagRun, DagRunType
from airflow.models.task_state_store import TaskStateStoreModel
from airflow.state import AssetScope, TaskScope
from airflow.state.metastore import MetastoreBackend
from airflow.utils.session import create_session, create_session_async
from sqlalchemy import Delete, delete, select
from sqlalchemy.orm import Session

from eventstore.airflow import TasktrailBackend

DAG_ID = "test_dag"
TASK_ID = "test_task"
RUN_ID = "scheduled__2026-04-24"
DAGS = (DAG_ID, "dag1", "dag2")
ASSETS = ("test_asset", "other_asset")


def _clear_tables() -> None:
    with create_session() as session:
        session.execute(delete(TaskStateStoreModel))
        session.execute(delete(AssetStateStoreModel))
        session.execute(delete(DagRun).where(DagRun.dag_id.in_(DAGS)))
        session.execute(delete(AssetModel).where(AssetModel.name.in_(ASSETS)))


@pytest.fixture(autouse=True)
def clean_tables() -> Iterator[None]:
    _clear_tables()
    yield
    _clear_tables()


@pytest.fixture
def session() -> Iterator[Session]:
    """A session of Airflow's configured database, as Airflow's own tests get one."""
    opened = settings.Session()
    try:
        yield opened
    finally:
        opened.rollback()
        opened.close()


@pytest.fixture
def backend(tmp_path: Path) -> TasktrailBackend:
    return TasktrailBackend(f"sqlite:///{tmp_path / 'trail.db'}")


def _run() -> DagRun:
    return DagRun(
        dag_id=DAG_ID,
        run_id=RUN_ID,
        run_type=DagRunType.SCHEDULED,
        logical_date=datetime(2026, 4, 24, tzinfo=UTC),
        run_after=datetime(2026, 4, 24, tzinfo=UTC),
    )


@pytest.fixture
def dag_run(session: Session) -> DagRun:
    run = _run()
    session.add(run)
    session.flush()
    return run


@pytest.fixture
def dag_run_committed() -> DagRun:
    with create_session() as session:
        run = _run()
        session.add(run)
        session.flush()
        session.expunge(run)
    return run


@pytest.fixture
def asset(session: Session) -> AssetModel:
    a = AssetModel(uri="s3://bucket/prefix", name="test_asset", group="test")
    session.add(a)
    session.flush()
    return a


@pytest.fixture
def asset_committed() -> AssetModel:
    with create_session() as session:
        a = AssetModel(uri="s3://bucket/prefix", name="test_asset", group="test")
        session.add(a)
        session.flush()
        session.expunge(a)
    return a


@dataclass
class _TI:
    dag_id: str
    run_id: str
    task_id: str
    map_index: int


@pytest.fixture
def create_task_instance() -> Any:
    def create(task_id: str = TASK_ID, dag_id: str = DAG_ID) -> _TI:
        return _TI(dag_id, RUN_ID, task_id, -1)

    return create


def test_the_backend_is_a_metastore_backend_for_airflow(backend: TasktrailBackend) -> None:
    # `airflow state-store clean` and the writer-aware asset writes are for these only.
    assert isinstance(backend, MetastoreBackend)


class TestMetastoreBackendTaskScope:
    def test_get_returns_none_for_missing_key(
        self, session: Session, backend: TasktrailBackend, dag_run: DagRun
    ) -> None:
        scope = TaskScope(dag_id=DAG_ID, run_id=RUN_ID, task_id=TASK_ID)
        assert backend.get(scope, "missing", session=session) is None

    def test_set_and_get_roundtrip(
        self, session: Session, backend: TasktrailBackend, dag_run: DagRun
    ) -> None:
        scope = TaskScope(dag_id=DAG_ID, run_id=RUN_ID, task_id=TASK_ID)
        backend.set(scope, "job_id", '"app_1234"', session=session)
        session.flush()
        assert backend.get(scope, "job_id", session=session) == '"app_1234"'

    def test_set_twice_overrides_existing_value(
        self, session: Session, backend: TasktrailBackend, dag_run: DagRun
    ) -> None:
        scope = TaskScope(dag_id=DAG_ID, run_id=RUN_ID, task_id=TASK_ID)
        backend.set(scope, "job_id", '"app_try1"', session=session)
        session.flush()
        backend.set(scope, "job_id", '"app_try2"', session=session)
        session.flush()
        assert backend.get(scope, "job_id", session=session) == '"app_try2"'

    def test_set_stores_dag_run_id_fk(
        self, session: Session, backend: TasktrailBackend, dag_run: DagRun
    ) -> None:
        scope = TaskScope(dag_id=DAG_ID, run_id=RUN_ID, task_id=TASK_ID)
        backend.set(scope, "job_id", '"app_1234"', session=session)
        session.flush()
        row = session.scalar(
            select(TaskStateStoreModel).where(
                TaskStateStoreModel.dag_id == DAG_ID,
                TaskStateStoreModel.task_id == TASK_ID,
                TaskStateStoreModel.key == "job_id",
            )
        )
        assert row is not None
        assert row.dag_run_id == dag_run.id

    def test_delete_removes_key(
        self, session: Session, backend: TasktrailBackend, dag_run: DagRun
    ) -> None:
        scope = TaskScope(dag_id=DAG_ID, run_id=RUN_ID, task_id=TASK_ID)
        backend.set(scope, "job_id", '"app_1234"', session=session)
        backend.set(scope, "checkpoint", '"step_3"', session=session)
        session.flush()
        backend.delete(scope, "job_id", session=session)
        session.flush()
        assert backend.get(scope, "job_id", session=session) is None
        assert backend.get(scope, "checkpoint", session=session) == '"step_3"'

    def test_delete_is_noop_for_missing_key(
        self, session: Session, backend: TasktrailBackend, dag_run: DagRun
    ) -> None:
        scope = TaskScope(dag_id=DAG_ID, run_id=RUN_ID, task_id=TASK_ID)
        backend.delete(scope, "nonexistent", session=session)
        assert backend.get(scope, "nonexistent", session=session) is None

    def test_clear_removes_all_keys(
        self, session: Session, backend: TasktrailBackend, dag_run: DagRun
    ) -> None:
        scope = TaskScope(dag_id=DAG_ID, run_id=RUN_ID, task_id=TASK_ID)
        for key in ("job_id", "checkpoint", "watermark"):
            backend.set(scope, key, f'"val_{key}"', session=session)
        session.flush()
        backend.clear(scope, session=session)
        session.flush()
        for key in ("job_id", "checkpoint", "watermark"):
            assert backend.get(scope, key, session=session) is None

    def test_map_index_isolation(
        self, session: Session, backend: TasktrailBackend, dag_run: DagRun
    ) -> None:
        scope0 = TaskScope(dag_id=DAG_ID, run_id=RUN_ID, task_id=TASK_ID, map_index=0)
        scope1 = TaskScope(dag_id=DAG_ID, run_id=RUN_ID, task_id=TASK_ID, map_index=1)
        backend.set(scope0, "job_id", '"app_0"', session=session)
        backend.set(scope1, "job_id", '"app_1"', session=session)
        session.flush()
        assert backend.get(scope0, "job_id", session=session) == '"app_0"'
        assert backend.get(scope1, "job_id", session=session) == '"app_1"'

    def test_set_raises_for_missing_dag_run(
        self, session: Session, backend: TasktrailBackend
    ) -> None:
        scope = TaskScope(dag_id="nonexistent_dag", run_id="nonexistent_run", task_id=TASK_ID)
        with pytest.raises(ValueError, match="No DagRun found"):
            backend.set(scope, "job_id", '"app_1234"', session=session)
        assert backend.get(scope, "job_id") is None  # and nothing reached the log

    def test_clear_scoped_to_map_index(
        self, session: Session, backend: TasktrailBackend, dag_run: DagRun
    ) -> None:
        scope0 = TaskScope(dag_id=DAG_ID, run_id=RUN_ID, task_id=TASK_ID, map_index=0)
        scope1 = TaskScope(dag_id=DAG_ID, run_id=RUN_ID, task_id=TASK_ID, map_index=1)
        backend.set(scope0, "job_id", '"app_0"', session=session)
        backend.set(scope1, "job_id", '"app_1"', session=session)
        session.flush()
        backend.clear(scope0, session=session)
        session.flush()
        assert backend.get(scope0, "job_id", session=session) is None
        assert backend.get(scope1, "job_id", session=session) == '"app_1"'

    def test_clear_with_all_map_indices_flag_wipes_wide(
        self, session: Session, backend: TasktrailBackend, dag_run: DagRun
    ) -> None:
        scope0 = TaskScope(dag_id=DAG_ID, run_id=RUN_ID, task_id=TASK_ID, map_index=0)
        scope1 = TaskScope(dag_id=DAG_ID, run_id=RUN_ID, task_id=TASK_ID, map_index=1)
        backend.set(scope0, "job_id", '"app_0"', session=session)
        backend.set(scope1, "job_id", '"app_1"', session=session)
        session.flush()
        backend.clear(scope0, all_map_indices=True, session=session)
        session.flush()
        assert backend.get(scope0, "job_id", session=session) is None
        assert backend.get(scope1, "job_id", session=session) is None

    def test_set_without_expires_at_stores_null(
        self, session: Session, backend: TasktrailBackend, dag_run: DagRun
    ) -> None:
        scope = TaskScope(dag_id=DAG_ID, run_id=RUN_ID, task_id=TASK_ID)
        backend.set(scope, "job_id", '"app_1234"', session=session)
        session.flush()
        row = session.scalar(select(TaskStateStoreModel).where(TaskStateStoreModel.key == "job_id"))
        assert row is not None
        assert row.expires_at is None

    def test_cleanup_removes_expired_rows(
        self, session: Session, backend: TasktrailBackend, dag_run: DagRun
    ) -> None:
        scope = TaskScope(dag_id=DAG_ID, run_id=RUN_ID, task_id=TASK_ID)
        backend.set(scope, "old_key", '"old_value"', session=session)
        backend.set(scope, "new_key", '"new_value"', session=session)
        session.flush()
        old_row = session.scalar(
            select(TaskStateStoreModel).where(
                TaskStateStoreModel.dag_id == DAG_ID, TaskStateStoreModel.key == "old_key"
            )
        )
        assert old_row is not None
        old_row.expires_at = datetime.now(UTC) - timedelta(hours=1)
        session.flush()
        session.commit()

        backend.cleanup()

        session.expire_all()
        assert (
            session.scalar(select(TaskStateStoreModel).where(TaskStateStoreModel.key == "old_key"))
            is None
        )
        assert (
            session.scalar(select(TaskStateStoreModel).where(TaskStateStoreModel.key == "new_key"))
            is not None
        )

    def test_cleanup_removes_keys_expired_in_tasktrail_from_log_projection_and_mirror(
        self, session: Session, backend: TasktrailBackend, dag_run: DagRun
    ) -> None:
        """The tasktrail counterpart: the expiry is the one the worker computed."""
        scope = TaskScope(dag_id=DAG_ID, run_id=RUN_ID, task_id=TASK_ID)
        past = datetime.now(UTC) - timedelta(hours=1)
        backend.set(scope, "old_key", '"old_value"', expires_at=past, session=session)
        backend.set(scope, "new_key", '"new_value"', session=session)
        session.commit()

        dry = backend._summary_dry_run()
        assert dry == {"expired": [(DAG_ID, RUN_ID, TASK_ID, -1, "old_key")]}
        assert backend._summary_dry_run() == dry  # the dry run changed nothing
        backend.cleanup()

        assert backend._summary_dry_run() == {"expired": []}
        session.expire_all()
        keys = session.scalars(select(TaskStateStoreModel.key)).all()
        assert keys == ["new_key"]
        events = backend._call(_log)
        assert [(e.kind, e.key) for e in events] == [("set", "new_key"), ("compacted", None)]

    def test_cleanup_removes_expires_at_rows(
        self, session: Session, backend: TasktrailBackend, dag_run: DagRun
    ) -> None:
        scope = TaskScope(dag_id=DAG_ID, run_id=RUN_ID, task_id=TASK_ID)
        backend.set(scope, "short_lived", '"value"', session=session)
        session.flush()
        row = session.scalar(
            select(TaskStateStoreModel).where(
                TaskStateStoreModel.dag_id == DAG_ID, TaskStateStoreModel.key == "short_lived"
            )
        )
        assert row is not None
        row.expires_at = datetime.now(UTC) - timedelta(hours=1)
        session.flush()
        session.commit()

        backend.cleanup()

        session.expire_all()
        assert (
            session.scalar(
                select(TaskStateStoreModel).where(TaskStateStoreModel.key == "short_lived")
            )
            is None
        )

    def test_cleanup_batches_deletes(
        self,
        session: Session,
        backend: TasktrailBackend,
        dag_run: DagRun,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """cleanup() issues one DELETE per batch of the mirror's expired rows."""
        import airflow.state.metastore as metastore_mod

        monkeypatch.setenv("AIRFLOW__STATE_STORE__STATE_CLEANUP_BATCH_SIZE", "2")
        scope = TaskScope(dag_id=DAG_ID, run_id=RUN_ID, task_id=TASK_ID)
        for key in ("k1", "k2", "k3", "k4", "k5"):
            backend.set(scope, key, '"v"', session=session)
            session.flush()
        session.execute(
            TaskStateStoreModel.__table__.update().values(
                expires_at=datetime.now(UTC) - timedelta(hours=1)
            )
        )
        session.commit()

        deletes: list[Any] = []
        original_cs = metastore_mod.create_session

        @contextmanager
        def tracking_cs(*args: Any, **kwargs: Any) -> Iterator[Session]:
            with original_cs(*args, **kwargs) as s:
                orig_execute = s.execute

                def tracked(stmt: Any, *a: Any, **kw: Any) -> Any:
                    if isinstance(stmt, Delete):
                        deletes.append(stmt)
                    return orig_execute(stmt, *a, **kw)

                s.execute = tracked  # type: ignore[method-assign]
                yield s

        monkeypatch.setattr(metastore_mod, "create_session", tracking_cs)
        backend.cleanup()
        assert len(deletes) == 3  # batch_size=2, 5 rows: 2 + 2 + 1


class TestMetastoreBackendAssetScope:
    def test_get_returns_none_for_missing_key(
        self, session: Session, backend: TasktrailBackend, asset: AssetModel
    ) -> None:
        assert backend.get(AssetScope(asset_id=asset.id), "missing", session=session) is None

    def test_set_and_get_roundtrip(
        self, session: Session, backend: TasktrailBackend, asset: AssetModel
    ) -> None:
        scope = AssetScope(asset_id=asset.id)
        backend.set(scope, "watermark", '"2026-04-24T00:00:00Z"', session=session)
        session.flush()
        assert backend.get(scope, "watermark", session=session) == '"2026-04-24T00:00:00Z"'

    def test_set_twice_overwrites_existing_value(
        self, session: Session, backend: TasktrailBackend, asset: AssetModel
    ) -> None:
        scope = AssetScope(asset_id=asset.id)
        backend.set(scope, "watermark", '"2026-04-01T00:00:00Z"', session=session)
        session.flush()
        backend.set(scope, "watermark", '"2026-04-24T00:00:00Z"', session=session)
        session.flush()
        assert backend.get(scope, "watermark", session=session) == '"2026-04-24T00:00:00Z"'

    def test_delete_removes_key(
        self, session: Session, backend: TasktrailBackend, asset: AssetModel
    ) -> None:
        scope = AssetScope(asset_id=asset.id)
        backend.set(scope, "watermark", '"2026-04-24T00:00:00Z"', session=session)
        backend.set(scope, "file_count", "42", session=session)
        session.flush()
        backend.delete(scope, "watermark", session=session)
        session.flush()
        assert backend.get(scope, "watermark", session=session) is None
        assert backend.get(scope, "file_count", session=session) == "42"

    def test_delete_is_noop_for_missing_key(
        self, session: Session, backend: TasktrailBackend, asset: AssetModel
    ) -> None:
        scope = AssetScope(asset_id=asset.id)
        backend.delete(scope, "nonexistent", session=session)
        assert backend.get(scope, "nonexistent", session=session) is None

    def test_clear_removes_all_keys(
        self, session: Session, backend: TasktrailBackend, asset: AssetModel
    ) -> None:
        scope = AssetScope(asset_id=asset.id)
        for key in ("watermark", "file_count", "last_error"):
            backend.set(scope, key, f'"val_{key}"', session=session)
        session.flush()
        backend.clear(scope, session=session)
        session.flush()
        for key in ("watermark", "file_count", "last_error"):
            assert backend.get(scope, key, session=session) is None

    def test_different_assets_are_isolated(
        self, session: Session, backend: TasktrailBackend, asset: AssetModel
    ) -> None:
        asset2 = AssetModel(uri="s3://bucket/other", name="other_asset", group="test")
        session.add(asset2)
        session.flush()
        backend.set(AssetScope(asset_id=asset.id), "watermark", '"asset1"', session=session)
        session.flush()
        assert backend.get(AssetScope(asset_id=asset2.id), "watermark", session=session) is None

    def test_set_asset_state_store_writes_writer(
        self, backend: TasktrailBackend, asset_committed: AssetModel, create_task_instance: Any
    ) -> None:
        ti = create_task_instance()
        scope = AssetScope(asset_id=asset_committed.id)
        backend.set_asset_state_store(
            scope,
            "watermark",
            '"v"',
            kind=AssetStateStoreWriterKind.TASK,
            dag_id=ti.dag_id,
            run_id=ti.run_id,
            task_id=ti.task_id,
            map_index=ti.map_index,
        )
        with create_session() as s:
            row = s.scalar(
                select(AssetStateStoreModel).where(
                    AssetStateStoreModel.asset_id == asset_committed.id
                )
            )
        assert row is not None
        assert row.last_updated_by_kind == AssetStateStoreWriterKind.TASK.value
        assert row.last_updated_by_dag_id == ti.dag_id
        assert row.last_updated_by_run_id == ti.run_id
        assert row.last_updated_by_task_id == ti.task_id
        assert row.last_updated_by_map_index == ti.map_index
        # ... and tasktrail records the writer as the event's actor.
        [event] = backend._call(_events, backend._assets[asset_committed.id])
        assert event.actor == f"task:{DAG_ID}/{RUN_ID}/{TASK_ID}"

    def test_set_asset_state_store_upsert_updates_writer(
        self, backend: TasktrailBackend, asset_committed: AssetModel, create_task_instance: Any
    ) -> None:
        ti1 = create_task_instance(task_id="task1", dag_id="dag1")
        ti2 = create_task_instance(task_id="task2", dag_id="dag2")
        scope = AssetScope(asset_id=asset_committed.id)
        for ti, value in ((ti1, '"v1"'), (ti2, '"v2"')):
            backend.set_asset_state_store(
                scope,
                "watermark",
                value,
                kind=AssetStateStoreWriterKind.TASK,
                dag_id=ti.dag_id,
                run_id=ti.run_id,
                task_id=ti.task_id,
                map_index=ti.map_index,
            )
        with create_session() as s:
            row = s.scalar(
                select(AssetStateStoreModel).where(
                    AssetStateStoreModel.asset_id == asset_committed.id
                )
            )
        assert row is not None
        assert row.value == '"v2"'
        assert row.last_updated_by_dag_id == ti2.dag_id
        assert row.last_updated_by_task_id == ti2.task_id

    def test_set_stores_null_writer(
        self, session: Session, backend: TasktrailBackend, asset: AssetModel
    ) -> None:
        scope = AssetScope(asset_id=asset.id)
        backend.set(scope, "watermark", '"v"', session=session)
        session.flush()
        row = session.scalar(
            select(AssetStateStoreModel).where(AssetStateStoreModel.asset_id == asset.id)
        )
        assert row is not None
        assert row.last_updated_by_kind is None
        assert row.last_updated_by_dag_id is None
        assert row.last_updated_by_task_id is None

    @pytest.mark.parametrize(
        ("kind", "fields", "error"),
        [
            (AssetStateStoreWriterKind.TASK, {"task_id": None}, "kind='task' requires"),
            (
                AssetStateStoreWriterKind.WATCHER,
                {"run_id": None, "task_id": None, "map_index": None},
                "kind='watcher' must not carry task fields",
            ),
            (
                AssetStateStoreWriterKind.API,
                {"run_id": None, "task_id": None, "map_index": None},
                "kind='api' must not carry task fields",
            ),
        ],
    )
    def test_set_asset_state_store_checks_the_writer_fields(
        self,
        backend: TasktrailBackend,
        asset_committed: AssetModel,
        create_task_instance: Any,
        kind: AssetStateStoreWriterKind,
        fields: dict[str, Any],
        error: str,
    ) -> None:
        ti = create_task_instance()
        writer = {
            "dag_id": ti.dag_id,
            "run_id": ti.run_id,
            "task_id": ti.task_id,
            "map_index": ti.map_index,
            **fields,
        }
        scope = AssetScope(asset_id=asset_committed.id)
        with pytest.raises(ValueError, match=error):
            backend.set_asset_state_store(scope, "watermark", '"v"', kind=kind, **writer)

    def test_cleanup_does_not_touch_asset_state(
        self, session: Session, backend: TasktrailBackend, asset: AssetModel
    ) -> None:
        scope = AssetScope(asset_id=asset.id)
        backend.set(scope, "watermark", '"2026-01-01"', session=session)
        session.flush()
        session.commit()
        backend.cleanup()
        session.expire_all()
        assert (
            session.scalar(
                select(AssetStateStoreModel).where(AssetStateStoreModel.asset_id == asset.id)
            )
            is not None
        )
        assert backend.get(scope, "watermark", session=session) == '"2026-01-01"'


class TestMetastoreBackendAsync:
    @pytest.fixture(autouse=True)
    async def dispose_async_engine(self) -> Any:
        """Airflow's async engine pools connections of the test's event loop: closed with it."""
        yield
        if settings.async_engine is not None:
            await settings.async_engine.dispose()

    async def test_aset_and_aget_task_roundtrip(
        self, backend: TasktrailBackend, dag_run_committed: DagRun
    ) -> None:
        scope = TaskScope(dag_id=DAG_ID, run_id=RUN_ID, task_id=TASK_ID)
        await backend.aset(scope, "job_id", '"app_async"')
        assert await backend.aget(scope, "job_id") == '"app_async"'

    async def test_adelete_task_removes_key(
        self, backend: TasktrailBackend, dag_run_committed: DagRun
    ) -> None:
        scope = TaskScope(dag_id=DAG_ID, run_id=RUN_ID, task_id=TASK_ID)
        await backend.aset(scope, "job_id", '"app_async"')
        await backend.adelete(scope, "job_id")
        assert await backend.aget(scope, "job_id") is None

    async def test_aclear_task_removes_all_keys(
        self, backend: TasktrailBackend, dag_run_committed: DagRun
    ) -> None:
        scope = TaskScope(dag_id=DAG_ID, run_id=RUN_ID, task_id=TASK_ID)
        await backend.aset(scope, "job_id", '"app_async"')
        await backend.aset(scope, "checkpoint", '"step_1"')
        await backend.aclear(scope)
        assert await backend.aget(scope, "job_id") is None
        assert await backend.aget(scope, "checkpoint") is None

    async def test_aclear_with_all_map_indices_flag_wipes_fleet(
        self, backend: TasktrailBackend, dag_run_committed: DagRun
    ) -> None:
        scope0 = TaskScope(dag_id=DAG_ID, run_id=RUN_ID, task_id=TASK_ID, map_index=0)
        scope1 = TaskScope(dag_id=DAG_ID, run_id=RUN_ID, task_id=TASK_ID, map_index=1)
        await backend.aset(scope0, "job_id", '"app_0"')
        await backend.aset(scope1, "job_id", '"app_1"')
        await backend.aclear(scope0, all_map_indices=True)
        assert await backend.aget(scope0, "job_id") is None
        assert await backend.aget(scope1, "job_id") is None

    async def test_aset_and_aget_asset_roundtrip(
        self, backend: TasktrailBackend, asset_committed: AssetModel
    ) -> None:
        scope = AssetScope(asset_id=asset_committed.id)
        await backend.aset(scope, "watermark", '"2026-04-27T00:00:00Z"')
        assert await backend.aget(scope, "watermark") == '"2026-04-27T00:00:00Z"'

    async def test_adelete_asset_removes_key(
        self, backend: TasktrailBackend, asset_committed: AssetModel
    ) -> None:
        scope = AssetScope(asset_id=asset_committed.id)
        await backend.aset(scope, "watermark", '"2026-04-27T00:00:00Z"')
        await backend.adelete(scope, "watermark")
        assert await backend.aget(scope, "watermark") is None

    async def test_aclear_asset_removes_all_keys(
        self, backend: TasktrailBackend, asset_committed: AssetModel
    ) -> None:
        scope = AssetScope(asset_id=asset_committed.id)
        await backend.aset(scope, "watermark", '"2026-04-27T00:00:00Z"')
        await backend.aset(scope, "file_count", "42")
        await backend.aclear(scope)
        assert await backend.aget(scope, "watermark") is None
        assert await backend.aget(scope, "file_count") is None

    async def test_aset_asset_state_store_writes_writer(
        self, backend: TasktrailBackend, asset_committed: AssetModel, create_task_instance: Any
    ) -> None:
        ti = create_task_instance()
        scope = AssetScope(asset_id=asset_committed.id)
        await backend.aset_asset_state_store(
            scope,
            "watermark",
            '"v"',
            kind=AssetStateStoreWriterKind.TASK,
            dag_id=ti.dag_id,
            run_id=ti.run_id,
            task_id=ti.task_id,
            map_index=ti.map_index,
        )
        async with create_session_async() as s:
            row = await s.scalar(
                select(AssetStateStoreModel).where(
                    AssetStateStoreModel.asset_id == asset_committed.id
                )
            )
        assert row is not None
        assert row.last_updated_by_kind == AssetStateStoreWriterKind.TASK.value
        assert row.last_updated_by_dag_id == ti.dag_id
        assert row.last_updated_by_task_id == ti.task_id

    async def test_aset_task_raises_for_missing_dag_run(self, backend: TasktrailBackend) -> None:
        scope = TaskScope(dag_id="nonexistent_dag", run_id="nonexistent_run", task_id=TASK_ID)
        with pytest.raises(ValueError, match="No DagRun found"):
            await backend.aset(scope, "job_id", '"app_async"')

    async def test_aset_and_aget_with_provided_session(
        self, backend: TasktrailBackend, dag_run_committed: DagRun
    ) -> None:
        scope = TaskScope(dag_id=DAG_ID, run_id=RUN_ID, task_id=TASK_ID)
        async with create_session_async() as session:
            await backend.aset(scope, "job_id", '"app_with_session"', session=session)
            result = await backend.aget(scope, "job_id", session=session)
        assert result == '"app_with_session"'


class TestStateStoreConfig:
    def test_defaults(self) -> None:
        assert conf.getint("state_store", "default_retention_days") == 30
        assert conf.getint("state_store", "state_cleanup_batch_size") == 0


async def _events(store: Any, scope: Any) -> list[Any]:
    """The tasktrail history of a scope (Airflow's or tasktrail's), through the open store."""
    from eventstore.airflow.scopes import tasktrail_scope as _tasktrail_scope

    events: list[Any] = await store.history(_tasktrail_scope(scope)).events()
    return events


async def _log(store: Any) -> list[Any]:
    """Every event the log holds, in position order."""
    from eventstore.log.recorded import recorded_event
    from eventstore.log.scopes import scope_from_key

    scopes = {r.scope_id: scope_from_key(r.scope_key) for r in await store.backend.select_scopes()}
    return [
        recorded_event(row, scopes[row.scope_id]) async for row in store.backend.select_all_events()
    ]
