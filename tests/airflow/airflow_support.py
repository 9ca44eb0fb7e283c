"""The part of Airflow's database the backend reads, made small for the tests; a tasktrail
service to write through."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from airflow.models import import_all_models
from airflow.models.asset import AssetModel
from airflow.models.base import Base
from airflow.models.dagrun import DagRun, DagRunType
from airflow.models.taskinstance import TaskInstance
from sqlalchemy import create_engine, insert, select, update
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
            add_dag_run(session, DAG_ID, run_id)
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

    def add_dag_run(self, dag_id: str = DAG_ID, run_id: str = RUN_ID) -> None:
        with Session(self.engine) as session, session.begin():
            add_dag_run(session, dag_id, run_id)

    def session(self) -> Session:
        return Session(self.engine)

    @contextmanager
    def session_scope(self) -> Iterator[Session]:
        """A session committed at the end of the block, as Airflow's `create_session`."""
        with Session(self.engine) as session, session.begin():
            yield session


def add_dag_run(session: Session, dag_id: str, run_id: str) -> None:
    """A DagRun (Airflow writes task state only for task instances of a run it knows)."""
    found = session.scalar(
        select(DagRun.id).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)
    )
    if found is None:
        moment = datetime(2026, 1, 1, tzinfo=UTC)
        session.add(
            DagRun(
                dag_id=dag_id,
                run_id=run_id,
                run_type=DagRunType.MANUAL,
                logical_date=moment,
                run_after=moment,
            )
        )
        session.flush()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def tasktrail_service(db_url: str, secret: str, log: Path) -> Iterator[str]:
    """`tasktrail serve` on db_url at a free loopback port, for the block; yields its URL."""
    port = free_port()
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "eventstore", "serve", "--db", db_url, "--port", str(port)],
            env={**os.environ, "TASKTRAIL_SECRET": secret},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=1):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"tasktrail serve did not start; see {log}") from None
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
