"""The mirror's statements on Airflow's tables, built once per process (and dialect): every
value a bound parameter, so a row costs its parameters, not a statement built and compiled, and
a batch of rows is one executemany."""

from __future__ import annotations

import functools
from typing import Any, Literal

__all__ = ["ASSET_WRITER", "TaskTarget", "delete_rows", "task_query", "upsert_rows"]

TaskTarget = Literal["task", "asset"]

ASSET_WRITER = (
    "last_updated_by_kind",
    "last_updated_by_dag_id",
    "last_updated_by_run_id",
    "last_updated_by_task_id",
    "last_updated_by_map_index",
)


@functools.cache
def upsert_rows(dialect: str | None, table: TaskTarget) -> Any:
    """INSERT ... ON CONFLICT UPDATE of rows of Airflow's task or asset table, as Airflow's own
    backend writes them; executed with one dict of column values per row."""
    from airflow.models.asset_state_store import AssetStateStoreModel
    from airflow.models.task_state_store import TaskStateStoreModel

    if table == "task":
        model = TaskStateStoreModel.__table__
        conflict = ["dag_run_id", "task_id", "map_index", "key"]
        updated = ["value", "updated_at", "expires_at"]
    else:
        model = AssetStateStoreModel.__table__
        conflict = ["asset_id", "key"]
        updated = ["value", "updated_at", *ASSET_WRITER]
    if dialect == "mysql":
        from sqlalchemy.dialects.mysql import insert as mysql_insert

        mysql = mysql_insert(model)
        return mysql.on_duplicate_key_update({c: mysql.inserted[c] for c in updated})
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    statement = insert(model)
    return statement.on_conflict_do_update(
        index_elements=conflict, set_={c: statement.excluded[c] for c in updated}
    )


@functools.cache
def delete_rows(table: TaskTarget, one_key: bool, one_map_index: bool = True) -> Any:
    """DELETE of a place's rows (`one_key`: of one key); parameters dag_id, run_id, task_id,
    map_index (`one_map_index`), key, or asset_id, key."""
    from airflow.models.asset_state_store import AssetStateStoreModel
    from airflow.models.task_state_store import TaskStateStoreModel
    from sqlalchemy import bindparam, delete

    model: Any = TaskStateStoreModel if table == "task" else AssetStateStoreModel
    if table == "task":
        where = [
            model.dag_id == bindparam("p_dag_id"),
            model.run_id == bindparam("p_run_id"),
            model.task_id == bindparam("p_task_id"),
        ]
        if one_map_index:
            where.append(model.map_index == bindparam("p_map_index"))
    else:
        where = [model.asset_id == bindparam("p_asset_id")]
    if one_key:
        where.append(model.key == bindparam("p_key"))
    return delete(model).where(*where)


@functools.cache
def task_query() -> Any:
    """The DagRun's id and the task instance's running try, in one query: (id, try) with no
    task instance yet gives (id, None); no row at all, no DagRun. Parameters dag_id, run_id,
    task_id, map_index."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance as TI
    from sqlalchemy import and_, bindparam, select

    return (
        select(DagRun.id, TI.try_number)
        .outerjoin(
            TI,
            and_(
                TI.dag_id == DagRun.dag_id,
                TI.run_id == DagRun.run_id,
                TI.task_id == bindparam("p_task_id"),
                TI.map_index == bindparam("p_map_index"),
            ),
        )
        .where(DagRun.dag_id == bindparam("p_dag_id"), DagRun.run_id == bindparam("p_run_id"))
    )
