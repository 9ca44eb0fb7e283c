"""Reading sealed values: a scope's data keys are fetched once, then its values open without the
key store, on SQLite and PostgreSQL key stores alike."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from eventstore import StoreConfig, TaskScope, generate_master_key, open_store
from eventstore.log.scopes import scope_key
from tests.conftest import postgres_schema_url

SCOPE = TaskScope("etl", "run_1", "ingest")
OTHER = TaskScope("etl", "run_1", "other")


@pytest.fixture(params=["sqlite", "postgresql"])
def key_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'keys.db'}"
        return
    with postgres_schema_url() as url:
        yield url


async def test_values_open_without_the_key_store_once_their_keys_are_fetched(
    tmp_path: Path, key_store: str
) -> None:
    url = f"sqlite:///{tmp_path / 'trail.db'}"
    config = StoreConfig(master_keys=(generate_master_key(),), key_store=key_store)
    async with open_store(url, config=config) as writer:
        await writer.task_store("etl", "run_1", "ingest").set_many({"a": 1, "b": [2], "c": "3"})
        await writer.task_store("etl", "run_1", "other").set("d", 4)
    async with open_store(url, config=config) as reader:
        rows = await reader.backend.select_current(await reader.scope_id(SCOPE) or 0)
        values = [row.value for row in rows]
        assert reader.vault.unready(scope_key(SCOPE), values)
        accessor = reader.task_store("etl", "run_1", "ingest")
        assert await accessor.items() == {"a": 1, "b": [2], "c": "3"}
        assert not reader.vault.unready(scope_key(SCOPE), values)
        assert reader.vault.unready(scope_key(OTHER))  # only the scope read was fetched
        # The key store closed under it: what follows can only come from the keys at hand.
        assert reader.vault.store is not None
        await reader.vault.store.aclose()
        assert await accessor.items() == {"a": 1, "b": [2], "c": "3"}
        assert await accessor.get("b") == [2]
        with pytest.raises(Exception):  # noqa: B017, PT011 (whatever the driver says)
            await reader.task_store("etl", "run_1", "other").get("d")
