"""The key store in PostgreSQL: data keys shared by replicas, apart from the log's schema."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import anyio
import pytest

from eventstore import (
    ERASED,
    MasterKeyError,
    StoreConfig,
    TaskScope,
    generate_master_key,
    open_store,
)
from eventstore.log.errors import ConfigError
from eventstore.log.scopes import scope_key
from projections import At
from tests.conftest import postgres_schema_url, require_postgres_url

SCOPE = TaskScope("etl", "run_1", "ingest")


@pytest.fixture
def urls() -> Iterator[tuple[str, str]]:
    """The log's URL and the key store's: two schemas of the test database."""
    with postgres_schema_url() as log, postgres_schema_url() as keys:
        yield log, keys


async def test_replicas_share_data_keys_and_hear_of_an_erasure(urls: tuple[str, str]) -> None:
    log, keys = urls
    config = StoreConfig(master_keys=(generate_master_key(),), key_store=keys)
    async with open_store(log, config=config) as a, open_store(log, config=config) as b:
        ta = a.task_store("etl", "run_1", "ingest")
        tb = b.task_store("etl", "run_1", "ingest")
        await ta.set("from_a", 1)
        await tb.set("from_b", 2)
        assert await ta.items() == {"from_a": 1, "from_b": 2}
        assert await tb.items() == {"from_a": 1, "from_b": 2}
        await b.erase(SCOPE)
        for _ in range(500):  # the notification arrives on a's own connection
            if a.vault.store.changed_pending():  # type: ignore[union-attr]
                break
            await anyio.sleep(0.01)
        else:
            pytest.fail("the erasure was never heard of")
        await ta.set("after", 3)
        assert await tb.items() == {"after": 3}
        assert await a.history(SCOPE).state(At.seq(1)) == {"from_a": ERASED}
        assert (await a.verify()).ok
    async with open_store(log, config=config) as store:
        assert await store.task_store("etl", "run_1", "ingest").items() == {"after": 3}
    with pytest.raises(MasterKeyError, match="is encrypted"):
        async with open_store(log, config=StoreConfig(key_store=keys)):
            pass


async def test_rotation_in_a_postgres_key_store(urls: tuple[str, str]) -> None:
    log, keys = urls
    old, new = generate_master_key(), generate_master_key()
    async with open_store(log, config=StoreConfig(master_keys=(old,), key_store=keys)) as store:
        for n in range(3):
            await store.task_store("etl", f"run_{n}", "t").set("v", n)
    both = StoreConfig(master_keys=(new, old), key_store=keys)
    async with open_store(log, config=both) as store:
        report = await store.rotate_keys()
        assert (report.rewrapped, report.data_keys, report.retired) == (3, 3, [old.split(".")[0]])
    async with open_store(log, config=StoreConfig(master_keys=(new,), key_store=keys)) as store:
        assert [await store.task_store("etl", f"run_{n}", "t").get("v") for n in range(3)] == [
            0,
            1,
            2,
        ]


async def test_key_store_in_the_log_schema_is_refused(urls: tuple[str, str]) -> None:
    log, _ = urls
    with pytest.raises(ConfigError, match="apart from the log"):
        async with open_store(
            log, config=StoreConfig(master_keys=(generate_master_key(),), key_store=log)
        ):
            pass


async def _raw_pages_holding(url: str, needles: list[bytes]) -> list[int]:
    """Which of `needles` are anywhere in the raw pages of the key store's data_keys table,
    dead tuples and free space included (pageinspect's get_raw_page)."""
    import asyncpg

    from eventstore.log.backends.postgres.backend import split_url

    dsn, schema = split_url(url)
    conn = await asyncpg.connect(dsn)
    try:
        try:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pageinspect")
        except asyncpg.PostgresError as error:
            pytest.skip(f"pageinspect is not available to the test user: {error}")
        table = f'"{schema}".data_keys'
        blocks = await conn.fetchval("SELECT pg_relation_size($1::regclass) / 8192", table)
        assert blocks > 0
        pages = [
            bytes(await conn.fetchval("SELECT get_raw_page($1, $2::int)", table, n))
            for n in range(blocks)
        ]
    finally:
        await conn.close()
    return [i for i, needle in enumerate(needles) if any(needle in page for page in pages)]


@pytest.fixture
def own_database_urls() -> Iterator[tuple[str, str]]:
    """The log's URL and the key store's in a database of their own, dropped afterwards.

    VACUUM keeps a dead row that a transaction open on the same database may still see, so
    other sessions sharing the test database (a second test run) would keep the destroyed key
    in the page; PostgreSQL keeps that horizon per database.
    """
    import asyncpg

    base = require_postgres_url()
    name = f"tasktrail_keys_{uuid.uuid4().hex[:12]}"
    parts = urlsplit(base)
    url = urlunsplit(parts._replace(path=f"/{name}"))

    async def admin(statement: str) -> None:
        conn = await asyncpg.connect(base)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        separator = "&" if parts.query else "?"
        yield f"{url}{separator}schema=log", f"{url}{separator}schema=keys"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def test_a_destroyed_data_key_is_in_no_page_of_the_postgres_key_store(
    own_database_urls: tuple[str, str],
) -> None:
    log, keys = own_database_urls
    config = StoreConfig(master_keys=(generate_master_key(),), key_store=keys)
    scopes = [TaskScope("etl", "run_1", f"task_{n}") for n in range(40)]
    async with open_store(log, config=config) as store:
        for scope in scopes:
            await store.task_store(scope.dag_id, scope.run_id, scope.task_id).set("v", 1)
        vault = store.vault.store
        assert vault is not None
        wrapped = [(await vault.data_keys(scope_key(s)))[0][0][3] for s in scopes]
        assert await _raw_pages_holding(keys, wrapped) == list(range(len(scopes)))
        # The first key made and the last: one at the end of the page, one before free space.
        for n in (0, 39):
            await store.erase(scopes[n])
        assert await _raw_pages_holding(keys, wrapped) == list(range(1, 39))
        assert await store.task_store("etl", "run_1", "task_1").get("v") == 1


async def test_an_erasure_outwaits_a_short_transaction_before_it_vacuums_the_key_away(
    own_database_urls: tuple[str, str],
) -> None:
    # Another session's write transaction, anywhere in the cluster, keeps a deleted row alive
    # through VACUUM until it ends: as the log's replicas' transactions do, for milliseconds.
    import asyncpg

    log, keys = own_database_urls
    config = StoreConfig(master_keys=(generate_master_key(),), key_store=keys)
    blocker = await asyncpg.connect(require_postgres_url())
    try:
        async with open_store(log, config=config) as store:
            await store.task_store("etl", "run_1", "t").set("v", 1)
            await store.task_store("etl", "run_1", "kept").set("v", 2)  # the table keeps a page
            vault = store.vault.store
            assert vault is not None
            wrapped = (await vault.data_keys(scope_key(TaskScope("etl", "run_1", "t"))))[0][0][3]
            await blocker.execute("BEGIN; SELECT txid_current()")

            async def end_blocker() -> None:
                await anyio.sleep(0.5)
                await blocker.execute("COMMIT")

            async with anyio.create_task_group() as tg:
                tg.start_soon(end_blocker)
                await store.erase(TaskScope("etl", "run_1", "t"))
            assert await _raw_pages_holding(keys, [wrapped]) == []
            assert await store.task_store("etl", "run_1", "kept").get("v") == 2
    finally:
        await blocker.close()
