"""The part of Airflow's database the backend reads, made small for the tests."""

from __future__ import annotations

import shutil
from pathlib import Path

from airflow.models import import_all_models
from airflow.models.asset import AssetModel
from airflow.models.base import Base
from airflow.models.taskinstance import TaskInstance
from sqlalchemy import create_engine, insert, update
from sqlalchemy.orm import Session

DAG_ID = "etl"
RUN_ID = "manual__2026-01-01"


class AirflowDatabase:
    """The two tables of Airflow's database the backend reads: task instances and assets."""

    def __init__(self, path: Path, template: Path | None = None) -> None:
        """An empty database at path, copied from template (made by an earlier one) if given."""
        if template is not None:
            shutil.copyfile(template, path)
        self.url = f"sqlite:///{path}"
        self.engine = create_engine(self.url)
        if template is None:
            import_all_models()
            Base.metadata.create_all(self.engine)

    def add_task_instance(
        self, task_id: str, map_index: int = -1, try_number: int = 1, run_id: str = RUN_ID
    ) -> None:
        with Session(self.engine) as session, session.begin():
            session.execute(
                insert(TaskInstance.__table__).values(
                    dag_id=DAG_ID,
                    run_id=run_id,
                    task_id=task_id,
                    map_index=map_index,
                    try_number=try_number,
                    pool="default_pool",
                )
            )

    def set_try(self, task_id: str, try_number: int, map_index: int = -1) -> None:
        table = TaskInstance.__table__
        with Session(self.engine) as session, session.begin():
            session.execute(
                update(table)
                .where(table.c.task_id == task_id, table.c.map_index == map_index)
                .values(try_number=try_number)
            )

    def add_asset(self, asset_id: int, name: str, uri: str) -> None:
        with Session(self.engine) as session, session.begin():
            session.execute(insert(AssetModel.__table__).values(id=asset_id, name=name, uri=uri))

    def session(self) -> Session:
        return Session(self.engine)
