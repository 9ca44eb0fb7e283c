"""What a copy of the projection is checked against: every scope the log ever had a write for,
and every projection row with its scope (the Airflow backend's mirror check reads these)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from eventstore import AssetScope, TaskScope
from eventstore.store import Store
from tests.conftest import FakeClock

pytestmark = pytest.mark.asyncio


async def test_every_current_row_comes_with_its_scope_expired_ones_included(
    store: Store, clock: FakeClock
) -> None:
    await store.task_store("d", "r", "t").set("short", 1, retention=timedelta(hours=1))
    await store.task_store("d", "r", "t", map_index=2).set("long", 2)
    await store.asset_store(name="orders").set("watermark", 3)
    clock.advance(timedelta(hours=2))
    rows = {(scope, row.key) for scope, row in await store.every_current()}
    assert rows == {
        (TaskScope("d", "r", "t"), "short"),
        (TaskScope("d", "r", "t", 2), "long"),
        (AssetScope(name="orders"), "watermark"),
    }


async def test_a_cleared_scope_is_still_among_the_written_ones(store: Store) -> None:
    task = store.task_store("d", "r", "t")
    await task.set("k", 1)
    await task.clear()
    assert await store.every_current() == []
    assert await store.written_scopes() == [TaskScope("d", "r", "t")]
