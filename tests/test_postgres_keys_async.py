"""The PostgreSQL key store's async core: on the caller's event loop, replicas agreeing on keys
and hearing of an erasure, with no loop or thread of its own."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import anyio
import pytest
from conftest import postgres_schema_url

from eventstore.log.backends.postgres.keys import PostgresKeys
from eventstore.log.errors import ReadOnlyStoreError


@pytest.fixture
def keys_url() -> Iterator[str]:
    with postgres_schema_url() as url:
        yield url


def _make(scope_key: str, generation: int) -> tuple[str, bytes]:
    return "master-1", f"{scope_key}/{generation}".encode()


async def test_replicas_agree_on_a_scopes_key_and_hear_of_its_erasure(keys_url: str) -> None:
    threads = threading.active_count()
    a = await PostgresKeys.connect(keys_url)
    b = await PostgresKeys.connect(keys_url)
    try:
        assert threading.active_count() == threads
        made = await a.current_keys(["scope-1"], _make)
        assert made == [("scope-1", 1, "master-1", b"scope-1/1")]
        assert await b.current_keys(["scope-1"], _make) == made
        assert await a.destroy("scope-1") == 1
        for _ in range(500):  # the notification arrives on b's own connection
            if b.changed_pending():
                break
            await anyio.sleep(0.01)
        else:
            pytest.fail("the erasure was never heard of")
        assert b.changed()
        assert not b.changed()  # told once
        assert not a.changed()  # its own erasure
        assert await b.data_keys("scope-1") == ([], 1)
        remade = await b.current_keys(["scope-1"], _make)
        assert remade == [("scope-1", 2, "master-1", b"scope-1/2")]
    finally:
        await a.aclose()
        await b.aclose()


async def test_a_read_only_key_store_makes_nothing_and_writes_nothing(keys_url: str) -> None:
    reader = await PostgresKeys.connect(keys_url, read_only=True)
    try:
        assert await reader.checks() == {}
        writer = await PostgresKeys.connect(keys_url)
        await writer.add_check("master-1", b"sealed")
        await writer.aclose()
        with pytest.raises(ReadOnlyStoreError, match="read-only"):
            await reader.add_check("master-2", b"sealed")
    finally:
        await reader.aclose()
