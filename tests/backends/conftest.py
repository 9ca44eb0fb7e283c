"""The storage interface itself, opened by URL over every backend: memory, SQLite, PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from eventstore.log.backends import LogBackend, open_backend
from eventstore.log.config import StoreConfig


@pytest.fixture
async def log(backend_url: str) -> AsyncIterator[LogBackend]:
    """A fresh, empty backend (the store URL fixture of tests/conftest.py picks which)."""
    backend = await open_backend(backend_url, StoreConfig())
    try:
        yield backend
    finally:
        await backend.aclose()
