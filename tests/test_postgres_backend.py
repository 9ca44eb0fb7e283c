"""What only the PostgreSQL backend has: its URL, its connections, its errors, its extra."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator

import anyio
import pytest
from conftest import FakeClock, postgres_schema_url, require_postgres_url

from eventstore import StoreConfig, open_store
from eventstore.log.backends import open_backend
from eventstore.log.backends.postgres.backend import PostgresBackend, split_url
from eventstore.log.errors import ConfigError, StoreClosedError


@pytest.fixture
def pg_url() -> Iterator[str]:
    with postgres_schema_url() as url:
        yield url


def test_the_schema_option_is_ours_and_the_rest_is_passed_on() -> None:
    assert split_url("postgresql://u@h/db?schema=s1&sslmode=disable") == (
        "postgresql://u@h/db?sslmode=disable",
        "s1",
    )
    assert split_url("postgresql://u:pw@h:5433/db") == ("postgresql://u:pw@h:5433/db", None)
    with pytest.raises(ConfigError, match="names the schema more than once or empty"):
        split_url("postgresql://u@h/db?schema=a&schema=b")
    with pytest.raises(ConfigError, match="names the schema more than once or empty"):
        split_url("postgresql://u@h/db?schema=")


async def test_stores_in_two_schemas_of_one_database_do_not_see_each_other(
    clock: FakeClock,
) -> None:
    with postgres_schema_url() as first, postgres_schema_url() as second:
        async with open_store(first, clock=clock) as a, open_store(second, clock=clock) as b:
            await a.task_store("d", "r", "t").set("k", "in first")
            assert await b.task_store("d", "r", "t").get("k") is None
            result = await b.task_store("d", "r", "t").set("k", "in second")
            assert result.seq == 1
            assert await a.task_store("d", "r", "t").get("k") == "in first"


async def test_a_schema_name_that_needs_quoting_works(clock: FakeClock) -> None:
    base = require_postgres_url()
    schema = f'Odd "name" {uuid.uuid4().hex[:6]}'
    url = f"{base}{'&' if '?' in base else '?'}schema={schema.replace(' ', '%20')}"
    try:
        async with open_store(url, clock=clock) as store:
            await store.task_store("d", "r", "t").set("k", 1)
            assert await store.task_store("d", "r", "t").get("k") == 1
    finally:
        import asyncpg

        conn = await asyncpg.connect(base)
        quoted = await conn.fetchval("SELECT quote_ident($1)", schema)
        await conn.execute(f"DROP SCHEMA IF EXISTS {quoted} CASCADE")
        await conn.close()


async def test_replicas_opening_a_new_database_together_migrate_it_once(pg_url: str) -> None:
    backends: list[PostgresBackend] = []

    async def connect() -> None:
        backends.append(await PostgresBackend.connect(pg_url, StoreConfig()))

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(connect)
    try:
        assert len(backends) == 4
        async with backends[0].write() as tx:
            assert (await tx.select_head_and_scopes())[0].last_seq == 0
    finally:
        for backend in backends:
            await backend.aclose()


async def test_a_missing_database_is_a_config_error() -> None:
    dsn, _ = split_url(require_postgres_url())
    missing = dsn.rsplit("/", 1)[0] + f"/no_such_db_{uuid.uuid4().hex[:8]}"
    with pytest.raises(ConfigError, match=r"no_such_db_\w+ does not exist; create it"):
        await open_backend(missing, StoreConfig())


async def test_an_unreachable_server_is_a_config_error() -> None:
    unreachable = r"cannot connect to PostgreSQL database 127\.0\.0\.1:1/test"
    with pytest.raises(ConfigError, match=unreachable):
        await open_backend("postgresql://postgres:secret@127.0.0.1:1/test", StoreConfig())


async def test_the_password_never_appears_in_errors() -> None:
    with pytest.raises(ConfigError) as caught:
        await open_backend("postgresql://postgres:hunter2@127.0.0.1:1/test", StoreConfig())
    assert "hunter2" not in str(caught.value)


async def test_durability_normal_turns_synchronous_commit_off(pg_url: str) -> None:
    for durability, expected in [("normal", "off"), ("full", "on")]:
        backend = await PostgresBackend.connect(pg_url, StoreConfig(durability=durability))
        try:
            async with backend.write() as tx:
                conn = tx.conn  # type: ignore[attr-defined]
                assert await conn.fetchval("SHOW synchronous_commit") == expected
        finally:
            await backend.aclose()


async def test_a_closed_backend_refuses_reads_and_writes(pg_url: str) -> None:
    backend = await PostgresBackend.connect(pg_url, StoreConfig())
    await backend.aclose()
    await backend.aclose()  # idempotent
    with pytest.raises(StoreClosedError, match="PostgreSQL log is closed"):
        await backend.select_scope("x")
    with pytest.raises(StoreClosedError, match="PostgreSQL log is closed"):
        async with backend.write():
            pass


def test_the_core_never_imports_the_driver() -> None:
    code = (
        "import sys, eventstore, eventstore.store, eventstore.cli, projections\n"
        "import eventstore.log.backends.sqlite.backend, eventstore.log.backends.memory\n"
        "assert 'asyncpg' not in sys.modules, 'the core imported asyncpg'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_without_the_extra_a_postgresql_url_says_what_to_install() -> None:
    code = (
        "import sys, anyio\n"
        "sys.modules['asyncpg'] = None  # as if the extra were not installed\n"
        "from eventstore import StoreConfig\n"
        "from eventstore.log.backends import open_backend\n"
        "from eventstore.log.errors import ConfigError\n"
        "try:\n"
        "    anyio.run(open_backend, 'postgresql://u:pw@h/db', StoreConfig())\n"
        "except ConfigError as error:\n"
        "    print(error)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "pip install 'tasktrail[postgres]'" in done.stdout
    assert "pw" not in done.stdout
