"""Fixtures of the Airflow suite, which runs in Airflow's own environment (scripts/airflow_env.sh).

Airflow reads AIRFLOW_HOME when it is first imported, so this module points it at a throwaway
directory before anything imports Airflow.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
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

from airflow_support import DAG_ID, RUN_ID, AirflowDatabase, add_dag_run, tasktrail_service  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from eventstore.airflow import TasktrailBackend  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def airflow_metadata_db() -> None:
    """Airflow's own configured database (in the throwaway AIRFLOW_HOME), where the backend
    opens a session when Airflow passes none, as MetastoreBackend does. The DagRuns the tests
    write to without a session of their own are in it."""
    from airflow import settings
    from airflow.models import import_all_models
    from airflow.models.base import Base
    from airflow.utils.session import create_session

    import_all_models()
    Base.metadata.create_all(settings.engine)
    with create_session() as session:
        for dag_id, run_id in [(DAG_ID, RUN_ID), ("d", "r")]:
            add_dag_run(session, dag_id, run_id)


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


@pytest.fixture(scope="session")
def service_secret() -> str:
    """The signing secret of every `tasktrail serve` the suite starts."""
    return secrets.token_urlsafe(32)


@pytest.fixture(scope="session")
def admin_token(service_secret: str) -> str:
    """The token the how-to tells operators to make for Airflow."""
    done = subprocess.run(
        [sys.executable, "-m", "eventstore", "token", "--role", "admin", "--name", "airflow"],
        env={**os.environ, "TASKTRAIL_SECRET": service_secret},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


@pytest.fixture(params=["embedded", "remote"])
def mode(request: pytest.FixtureRequest) -> str:
    """How the backend reaches the store: in process, or through `tasktrail serve`."""
    mode: str = request.param
    return mode


@pytest.fixture
def make_backend(
    mode: str, trail_url: str, tmp_path: Path, service_secret: str, admin_token: str
) -> Iterator[Callable[[], TasktrailBackend]]:
    """Makes backends writing to trail_url: directly, or through a service on it."""
    if mode == "embedded":
        yield lambda: TasktrailBackend(trail_url)
        return
    with tasktrail_service(trail_url, service_secret, tmp_path / "serve.log") as url:
        yield lambda: TasktrailBackend(url, token=admin_token)


@pytest.fixture
def backend(make_backend: Callable[[], TasktrailBackend]) -> TasktrailBackend:
    return make_backend()


@pytest.fixture
def actor(mode: str) -> str:
    """The actor the backend's writes are recorded with: an admin token's writes are its name's."""
    return "airflow" if mode == "embedded" else "api:airflow"
