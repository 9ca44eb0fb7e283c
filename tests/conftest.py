"""Fixtures shared by every suite: the backends to run against and a clock tests can move.

The clock is the test kit's (`eventstore.testing.FakeClock`), re-exported here for the suites
that import it from this module.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, contextmanager
from pathlib import Path

import pytest

from eventstore import Store, StoreConfig, open_store
from eventstore.testing import FakeClock

__all__ = ["BACKENDS", "FakeClock", "StoreFactory", "postgres_schema_url", "require_postgres_url"]

BACKENDS = ["memory", "sqlite", "postgres"]


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
    """An open store, opened and closed in a plain async fixture (pytest-asyncio sets it up and
    tears it down in different tasks)."""
    async with make_store() as opened:
        yield opened


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
