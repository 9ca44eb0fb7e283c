"""The mirror's writes: where a scope's rows live in Airflow's tables, and the statements that
keep them equal to the log."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from eventstore.airflow import statements
from eventstore.airflow.scopes import Writer, asset_id_of, aware
from eventstore.airflow.statements import ASSET_WRITER, TaskTarget, delete_rows, upsert_rows
from eventstore.log.scopes import AssetScope, Scope, TaskScope

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import Session

__all__ = ["Place", "async_session", "dag_run_query", "sync_session"]


@contextmanager
def sync_session(session: Session | None) -> Iterator[Session]:
    """The caller's session, or one of Airflow's own, committed at the end of the block."""
    if session is not None:
        yield session
        return
    from airflow.utils.session import create_session

    with create_session() as opened:
        yield opened


@asynccontextmanager
async def async_session(session: AsyncSession | None) -> AsyncIterator[AsyncSession]:
    if session is not None:
        yield session
        return
    from airflow.utils.session import create_session_async

    async with create_session_async() as opened:
        yield opened


@dataclass
class Place:
    """Where a scope's rows live in Airflow's tables: a task instance's (by its DagRun's id) or
    an asset's (by its id). `None` ids: Airflow has no such asset, and the mirror is skipped.
    `try_number`: the running try of the task instance, found with its DagRun.

    Its writes take a sync session; with an async one, `await session.run_sync(place.upsert,
    ...)` runs the same code (SQLAlchemy's bridge for that)."""

    task: TaskScope | None
    dag_run_id: int | None
    asset_id: int | None
    try_number: int | None = None

    @classmethod
    def find(
        cls, session: Session, scope: object, target: Scope, *, need_run: bool = True
    ) -> Place:
        if isinstance(target, TaskScope):
            found = loaded_task(session, target)
            if found is None:
                found = session.execute(*task_query(target)).one_or_none()
            return cls._task(target, found, need_run)
        asset_id = asset_id_of(scope)
        if asset_id is None:
            asset_id = session.scalar(asset_query(target))
        return cls(None, None, asset_id)

    @classmethod
    async def afind(
        cls, session: AsyncSession, scope: object, target: Scope, *, need_run: bool = True
    ) -> Place:
        if isinstance(target, TaskScope):
            found = loaded_task(session.sync_session, target)
            if found is None:
                found = (await session.execute(*task_query(target))).one_or_none()
            return cls._task(target, found, need_run)
        asset_id = asset_id_of(scope)
        if asset_id is None:
            asset_id = await session.scalar(asset_query(target))
        return cls(None, None, asset_id)

    @classmethod
    def _task(cls, target: TaskScope, found: Any, need_run: bool) -> Place:
        run_id, try_number = (None, None) if found is None else (found[0], found[1])
        if need_run and run_id is None:
            raise no_dag_run(target)
        return cls(target, run_id, None, try_number)

    def upsert_values(
        self, key: str, text: str, writer: Writer, expires_at: datetime | None
    ) -> tuple[TaskTarget, dict[str, Any]] | None:
        """The table and the row's column values (for `upsert_rows`); None: no place to write
        (no DagRun, no asset)."""
        now = datetime.now(UTC)
        if self.task is not None:
            if self.dag_run_id is None:
                return None
            task = self.task
            return "task", {
                "dag_run_id": self.dag_run_id,
                "dag_id": task.dag_id,
                "run_id": task.run_id,
                "task_id": task.task_id,
                "map_index": task.map_index,
                "key": key,
                "value": text,
                "updated_at": now,
                "expires_at": aware(expires_at),
            }
        if self.asset_id is None:
            return None
        fields = (writer.kind, writer.dag_id, writer.run_id, writer.task_id, writer.map_index)
        row = {"asset_id": self.asset_id, "key": key, "value": text, "updated_at": now}
        return "asset", {**row, **dict(zip(ASSET_WRITER, fields, strict=True))}

    def upsert_statement(
        self,
        dialect: str | None,
        key: str,
        text: str | None,
        writer: Writer,
        expires_at: datetime | None,
    ) -> tuple[Any, dict[str, Any]] | None:
        """The statement and parameters that make the key's row hold `text` (None: no row)."""
        if text is None:
            return self.delete_statement(key)
        found = self.upsert_values(key, text, writer, expires_at)
        if found is None:
            return None
        table, values = found
        return upsert_rows(dialect, table), values

    def delete_statement(
        self, key: str | None, all_map_indices: bool = False
    ) -> tuple[Any, dict[str, Any]] | None:
        """The statement and parameters that delete the key's row (None: every row of the
        place, of every map index with `all_map_indices`)."""
        params: dict[str, Any] = {} if key is None else {"p_key": key}
        if self.task is not None:
            task = self.task
            params.update(p_dag_id=task.dag_id, p_run_id=task.run_id, p_task_id=task.task_id)
            if not all_map_indices:
                params["p_map_index"] = task.map_index
            return delete_rows("task", key is not None, not all_map_indices), params
        if self.asset_id is None:
            return None
        params["p_asset_id"] = self.asset_id
        return delete_rows("asset", key is not None), params

    def row(self, session: Session, key: str) -> tuple[str, datetime | None, int | None] | None:
        """The (value, expires_at, dag_run_id) of a key's row in Airflow's table, or None."""
        from airflow.models.asset_state_store import AssetStateStoreModel
        from airflow.models.task_state_store import TaskStateStoreModel
        from sqlalchemy import select

        if self.task is not None:
            t = TaskStateStoreModel
            task = self.task
            found = session.execute(
                select(t.value, t.expires_at, t.dag_run_id).where(
                    t.dag_id == task.dag_id,
                    t.run_id == task.run_id,
                    t.task_id == task.task_id,
                    t.map_index == task.map_index,
                    t.key == key,
                )
            ).one_or_none()
            return None if found is None else (found[0], found[1], found[2])
        a = AssetStateStoreModel
        text = session.scalar(select(a.value).where(a.asset_id == self.asset_id, a.key == key))
        return None if text is None else (text, None, None)

    def upsert(
        self,
        session: Session,
        key: str,
        text: str | None,
        writer: Writer,
        expires_at: datetime | None,
    ) -> None:
        from airflow.utils.sqlalchemy import get_dialect_name

        statement = self.upsert_statement(get_dialect_name(session), key, text, writer, expires_at)
        if statement is not None:
            session.execute(*statement)

    def delete(self, session: Session, key: str) -> None:
        statement = self.delete_statement(key)
        if statement is not None:
            session.execute(*statement)

    def clear(self, session: Session, all_map_indices: bool) -> None:
        statement = self.delete_statement(None, all_map_indices)
        if statement is not None:
            session.execute(*statement)


def dag_run_query(scope: TaskScope) -> Any:
    from airflow.models.dagrun import DagRun
    from sqlalchemy import select

    return select(DagRun.id).where(DagRun.dag_id == scope.dag_id, DagRun.run_id == scope.run_id)


def asset_query(scope: Scope) -> Any:
    """The id of the newest of Airflow's assets with the scope's name and uri (those given)."""
    from airflow.models.asset import AssetModel
    from sqlalchemy import select

    assert isinstance(scope, AssetScope)
    query = select(AssetModel.id)
    if scope.name is not None:
        query = query.where(AssetModel.name == scope.name)
    if scope.uri is not None:
        query = query.where(AssetModel.uri == scope.uri)
    return query.order_by(AssetModel.id.desc()).limit(1)


def no_dag_run(scope: TaskScope) -> ValueError:
    # Airflow's own message, which its execution API turns into a 404.
    return ValueError(f"No DagRun found for dag_id={scope.dag_id!r} run_id={scope.run_id!r}")


def loaded_task(session: Session, scope: TaskScope) -> tuple[int, int] | None:
    """What `task_query` answers (the DagRun's id, the running try), read from the scope's task
    instance if the session holds it loaded with its DagRun; else None.

    Airflow's execution API loads the task instance to name the scope it passes (`session.get`,
    which joins the DagRun), in the transaction the backend is called in: asking the database
    again would cost a query per request for the same answer."""
    identity_map = session.identity_map
    if len(identity_map) > _SEARCHED:
        return None
    from airflow.models.taskinstance import TaskInstance

    wanted = (scope.dag_id, scope.run_id, scope.task_id, scope.map_index)
    for instance in identity_map.values():
        if not isinstance(instance, TaskInstance):
            continue
        # Loaded attributes only (the instance's __dict__): reading an expired one would load it.
        loaded = instance.__dict__
        if tuple(loaded.get(name) for name in _TASK_FIELDS) != wanted:
            continue
        run = loaded.get("dag_run")
        run_id = None if run is None else run.__dict__.get("id")
        try_number = loaded.get("try_number")
        if run_id is None or try_number is None:
            return None
        return run_id, try_number
    return None


# A session holding more instances than this is not one request's: it is not searched.
_SEARCHED: Final = 16
_TASK_FIELDS: Final = ("dag_id", "run_id", "task_id", "map_index")


def task_query(scope: TaskScope) -> tuple[Any, dict[str, Any]]:
    """The DagRun's id and the task instance's running try (`statements.task_query`)."""
    params = {
        "p_dag_id": scope.dag_id,
        "p_run_id": scope.run_id,
        "p_task_id": scope.task_id,
        "p_map_index": scope.map_index,
    }
    return statements.task_query(), params
