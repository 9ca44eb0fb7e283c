"""A real service on a loopback port, with a clock the tests move."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventstore.service import create_app, serve_in_thread
from service.service_helpers import SECRET, FakeClock, Service


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """One service per test module over a SQLite file; tests keep apart by their own dag ids."""
    clock = FakeClock()
    db: Path = tmp_path_factory.mktemp("service") / "trail.db"
    app = create_app(f"sqlite:///{db}", secret=SECRET, clock=clock)
    with serve_in_thread(app) as base_url:
        yield Service(base_url, clock)


@pytest.fixture
def dag() -> str:
    """A dag id no other test uses."""
    return f"dag-{uuid.uuid4().hex[:12]}"
