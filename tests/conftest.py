"""Fixtures shared by every suite: the backends to run against and a clock tests can move."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from eventstore import Store, StoreConfig, open_store

BACKENDS = ["memory", "sqlite", "postgres"]


class FakeClock:
    """A clock that stands still until a test moves it."""

    def __init__(self, start: datetime = datetime(2026, 1, 1, tzinfo=UTC)) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta = timedelta(seconds=1)) -> datetime:
        self.now += delta
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=BACKENDS)
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty store URL for each backend."""
    match request.param:
        case "memory":
            yield "memory://"
        case "sqlite":
            yield f"sqlite:///{tmp_path / 'trail.db'}"
        case "postgres":
            with postgres_schema_url() as url:
                yield url
        case _:
            raise AssertionError(request.param)


StoreFactory = Callable[..., AbstractAsyncContextManager[Store]]


@pytest.fixture
def make_store(backend_url: str, clock: FakeClock) -> StoreFactory:
    """Open the test's store (reopening gives the same data); config and clock may be overridden."""

    def factory(config: StoreConfig | None = None, clock_: FakeClock | None = None):  # type: ignore[no-untyped-def]
        return open_store(backend_url, config=config, clock=clock_ or clock)

    return factory


@pytest.fixture
async def store(make_store: StoreFactory) -> AsyncIterator[Store]:
    """An open store. It lives in a task of its own: pytest-asyncio sets a fixture up and tears
    it down in different tasks, and the store's task group must be left in the task that entered it.
    """
    opened: asyncio.Future[Store] = asyncio.get_running_loop().create_future()
    release = asyncio.Event()

    async def hold() -> None:
        try:
            async with make_store() as held:
                opened.set_result(held)
                await release.wait()
        except BaseException as error:
            if not opened.done():
                opened.set_exception(error)
            raise

    holder = asyncio.create_task(hold())
    yield await opened
    release.set()
    await holder


def postgres_url() -> str | None:
    return os.environ.get("TASKTRAIL_TEST_POSTGRES_URL")


def require_postgres_url() -> str:
    """The test server's URL; skips the test without one, unless CI demands PostgreSQL."""
    url = postgres_url()
    if url:
        return url
    reason = (
        "TASKTRAIL_TEST_POSTGRES_URL is not set; point it at a PostgreSQL database "
        "(e.g. postgresql://postgres@127.0.0.1:5432/test) to run the PostgreSQL tests"
    )
    if os.environ.get("TASKTRAIL_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"TASKTRAIL_REQUIRE_POSTGRES=1 but {reason}")
    pytest.skip(reason)


@contextmanager
def postgres_schema_url() -> Iterator[str]:
    """A URL naming a fresh PostgreSQL schema (created on first open), dropped afterwards."""
    base = require_postgres_url()
    schema = f"tasktrail_test_{uuid.uuid4().hex[:16]}"
    separator = "&" if "?" in base else "?"
    try:
        yield f"{base}{separator}schema={schema}"
    finally:
        # On a thread with a loop of its own: works inside and outside a running event loop.
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, _drop_schema(base, schema)).result()


async def _drop_schema(url: str, schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()
