"""A test kit for task code that checkpoints in tasktrail; a pytest plugin.

Installed with tasktrail, it is active in every pytest run (entry point `pytest11`):

- fixture `tasktrail_clock`: a UTC clock that stands still until the test moves it,
  `tasktrail_clock.advance(hours=2)`; `tasktrail_clock.now` is the time it shows;
- fixture `tasktrail_store`: an open `Store` using that clock, on `memory://`, or on the backend
  `--tasktrail-db URL` (or $TASKTRAIL_TEST_DB) names: a `sqlite://` URL gives each test a fresh
  SQLite file in its `tmp_path`, a `postgresql://` URL a fresh schema of that database, dropped
  after the test;
- `TaskTries(store, dag_id, run_id, task_id)`: `tries.next()` is the accessor of the task's next
  try (1, 2, …), to test what a retry of the task sees and does.

The async fixture is a pytest-asyncio fixture, so it works in strict mode and in auto mode.
See docs/how-to/test-your-resumable-task.md.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import pytest

from eventstore.log.scopes import TaskScope
from eventstore.store import Store, TaskStore, open_store
from projections.history import History

try:
    from pytest_asyncio import fixture as _async_fixture
except ImportError:  # pragma: no cover - pytest-asyncio runs the kit's async fixture
    # Without it the plugin still loads, so pytest runs in an environment with tasktrail but
    # without pytest-asyncio are not broken; only tests asking for tasktrail_store fail.
    _async_fixture = pytest.fixture  # type: ignore[assignment]

__all__ = ["FakeClock", "TaskTries", "tasktrail_clock", "tasktrail_store"]

START: Final = datetime(2026, 1, 1, tzinfo=UTC)
DB_ENV: Final = "TASKTRAIL_TEST_DB"


class FakeClock:
    """A UTC clock that stands still until a test moves it; pass it as the store's `clock`."""

    def __init__(self, start: datetime = START) -> None:
        if start.tzinfo is None:
            raise ValueError(f"the clock starts at an aware UTC datetime, got {start!r}")
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def __repr__(self) -> str:
        return f"<FakeClock {self.now.isoformat()}>"

    def advance(self, delta: timedelta | None = None, /, **timedelta_kwargs: float) -> datetime:
        """Move the clock on: `advance(hours=2)` or `advance(timedelta(hours=2))`; one second
        without arguments. Returns the new time. A negative step moves it back, to test what a
        clock that jumps backwards does."""
        if delta is not None and timedelta_kwargs:
            raise TypeError("advance takes a timedelta or timedelta keywords, not both")
        step = delta if delta is not None else timedelta(**timedelta_kwargs or {"seconds": 1})
        self.now += step
        return self.now


class TaskTries:
    """The tries of one task instance, handed out in order, as Airflow would retry it.

    >>> tries = TaskTries(store, "etl", "run_1", "load")
    >>> first = tries.next()    # the accessor of try 1
    >>> second = tries.next()   # try 2: fenced, try 1 can no longer write
    """

    def __init__(
        self,
        store: Store,
        dag_id: str,
        run_id: str,
        task_id: str,
        map_index: int = -1,
        *,
        actor: str = "task",
    ) -> None:
        self.store = store
        self.scope = TaskScope(dag_id, run_id, task_id, map_index)
        self.actor = actor
        self.try_number = 0  # the last try handed out; 0 before the first

    def __repr__(self) -> str:
        return f"<TaskTries {self.scope}, {self.try_number} handed out>"

    def next(self) -> TaskStore:
        """The accessor of the next try of the task, stamped with its try number."""
        self.try_number += 1
        return self.store.open_task(self.scope, self.try_number, self.actor)

    def history(self) -> History:
        """The task instance's history: `state(At.end_of_try(1))`, `diff(...)`, `tries()`."""
        return self.store.history(self.scope)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("tasktrail")
    group.addoption(
        "--tasktrail-db",
        default=None,
        metavar="URL",
        help="Run the tasktrail_store fixture on this backend: memory:// (the default), "
        "sqlite:// (a fresh file per test) or postgresql://... (a fresh schema per test). "
        f"Default: ${DB_ENV} or memory://.",
    )


def pytest_report_header(config: pytest.Config) -> str:
    return f"tasktrail: tasktrail_store on {_where(_db_option(config))}"


def _db_option(config: pytest.Config) -> str:
    option: str | None = config.getoption("--tasktrail-db")
    return option or os.environ.get(DB_ENV) or "memory://"


def _where(url: str) -> str:
    """The backend a URL names, fit for the report: never a password."""
    if url.startswith("sqlite:"):
        return "SQLite, a fresh file per test"
    if url.startswith(("postgresql:", "postgres:")):
        parts = urlsplit(url)
        return f"PostgreSQL {parts.hostname}:{parts.port or 5432}{parts.path}, a schema per test"
    return url


@pytest.fixture
def tasktrail_clock() -> FakeClock:
    """A clock standing at 2026-01-01 00:00 UTC until the test moves it."""
    return FakeClock()


async def _tasktrail_store(
    request: pytest.FixtureRequest, tasktrail_clock: FakeClock, tmp_path: Path
) -> AsyncIterator[Store]:
    """An open store, fresh for the test, on the clock `tasktrail_clock`."""
    server = url = _db_option(request.config)
    schema = None
    if url.startswith("sqlite:"):
        url = f"sqlite:///{tmp_path / 'tasktrail.db'}"
    elif url.startswith(("postgresql:", "postgres:")):
        schema = f"tasktrail_test_{uuid.uuid4().hex[:16]}"
        url = f"{url}{'&' if '?' in url else '?'}schema={schema}"
    try:
        async with open_store(url, clock=tasktrail_clock) as store:
            yield store
    finally:
        if schema is not None:
            await _drop_schema(server, schema)


async def _drop_schema(server: str, schema: str) -> None:
    """Drop the test's schema, through the server URL the kit was given (without `schema=`)."""
    import asyncpg

    conn = await asyncpg.connect(server)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


# A pytest-asyncio fixture, not a plain async function: strict mode runs only those.
tasktrail_store: Any = _async_fixture(_tasktrail_store, name="tasktrail_store")
