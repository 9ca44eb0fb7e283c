"""A real service on a loopback port, over SQLite and (when configured) PostgreSQL, with a clock
the tests move."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import ExitStack

import pytest
from conftest import postgres_schema_url

from eventstore.service import create_app, serve_in_thread
from service.service_helpers import SECRET, FakeClock, Service


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def service(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """One service per test module and backend; tests keep apart by their own dag ids."""
    clock = FakeClock()
    with ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path_factory.mktemp('service') / 'trail.db'}"
        else:
            url = stack.enter_context(postgres_schema_url())
        app = create_app(url, secret=SECRET, clock=clock)
        base_url = stack.enter_context(serve_in_thread(app))
        yield Service(base_url, clock)


@pytest.fixture
def dag() -> str:
    """A dag id no other test uses."""
    return f"dag-{uuid.uuid4().hex[:12]}"
