"""Fixtures of the Airflow suite, which runs in Airflow's own environment (scripts/airflow_env.sh).

Airflow reads AIRFLOW_HOME when it is first imported, so this module points it at a throwaway
directory before anything imports Airflow.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

_HOME = tempfile.mkdtemp(prefix="tasktrail-airflow-home-")
os.environ["AIRFLOW_HOME"] = _HOME
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"

import pytest  # noqa: E402

try:
    import airflow.state  # noqa: F401
except ImportError as e:  # pragma: no cover - a wrong environment, said loudly
    raise pytest.UsageError(
        "tests/airflow need Apache Airflow 3.3: run them with `bash scripts/airflow_env.sh`"
    ) from e

from airflow_support import AirflowDatabase  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from eventstore.airflow import TasktrailBackend  # noqa: E402


@pytest.fixture(scope="session")
def airflow_db_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("airflow-db") / "template.db"
    AirflowDatabase(path).engine.dispose()
    return path


@pytest.fixture
def airflow_db(tmp_path: Path, airflow_db_template: Path) -> Iterator[AirflowDatabase]:
    db = AirflowDatabase(tmp_path / "airflow.db", airflow_db_template)
    yield db
    db.engine.dispose()


@pytest.fixture
def session(airflow_db: AirflowDatabase) -> Iterator[Session]:
    with airflow_db.session() as opened:
        yield opened


@pytest.fixture
def trail_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'trail.db'}"


@pytest.fixture
def backend(trail_url: str) -> TasktrailBackend:
    return TasktrailBackend(trail_url)
