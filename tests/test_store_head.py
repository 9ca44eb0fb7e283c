"""Store.last_seq: the log's head, which `tasktrail tail` starts from, on every backend."""

from __future__ import annotations

import pytest
from conftest import StoreFactory

from eventstore import Store


async def test_last_seq_is_zero_on_an_empty_log(store: Store) -> None:
    assert await store.last_seq() == 0


async def test_last_seq_is_the_position_of_the_last_commit(store: Store) -> None:
    ts = store.task_store("d", "r", "t", try_number=1)
    await ts.set("a", 1)
    last = await ts.set_many({"b": 2, "c": 3})
    assert last.seq is not None
    assert await store.last_seq() == last.seq
    await ts.delete("missing")  # appends nothing
    assert await store.last_seq() == last.seq


async def test_last_seq_sees_the_commits_of_another_store_on_the_same_log(
    make_store: StoreFactory, backend_url: str
) -> None:
    if backend_url == "memory://":
        pytest.skip("an in-memory log has one store")
    async with make_store() as reader, make_store() as writer:
        result = await writer.task_store("d", "r", "t").set("k", "v")
        assert await reader.last_seq() == result.seq
