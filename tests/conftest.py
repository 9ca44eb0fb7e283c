"""Fixtures shared by every suite: the backends to run against and a clock tests can move."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from eventstore import Store, StoreConfig, open_store

BACKENDS = ["memory", "sqlite"]


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
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty store URL for each backend."""
    match request.param:
        case "memory":
            return "memory://"
        case "sqlite":
            return f"sqlite:///{tmp_path / 'trail.db'}"
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
