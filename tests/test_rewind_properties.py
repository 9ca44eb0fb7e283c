"""Rewind over random histories: after `rewind(p)` the current values are the state at p with
expiry applied as of now, every earlier event is still in history, and a rewind to where the
scope already is appends nothing."""

from __future__ import annotations

import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore import NEVER_EXPIRE, Store, StoreConfig, open_store
from projections import At
from tests.conftest import FakeClock
from tests.test_history_properties import SCOPE, fold, histories, upto


async def play_ops(store: Store, clock: FakeClock, history: list[tuple[Any, ...]]) -> None:
    """Apply a random history (tests.test_history_properties' operations) to SCOPE."""
    try_number = 1
    for op in history:
        accessor = store.task_store(SCOPE.dag_id, SCOPE.run_id, SCOPE.task_id, -1, try_number)
        match op:
            case ("set", key, value, retention):
                await accessor.set(key, value, retention=retention or NEVER_EXPIRE)
            case ("set_many", mapping, retention):
                await accessor.set_many(mapping, retention=retention or NEVER_EXPIRE)
            case ("delete", key):
                await accessor.delete(key)
            case ("clear",):
                await accessor.clear()
            case ("advance", seconds):
                clock.advance(timedelta(seconds=seconds))
            case ("next_try",):
                try_number += 1
            case ("untracked", key, value):
                await store.task_store(SCOPE.dag_id, SCOPE.run_id, SCOPE.task_id).set(key, value)
            case ("other_scope", key, value):
                await store.task_store("prop", "run", "other", -1, 1).set(key, value)


async def rewind_and_observe(
    url: str, history: list[tuple[Any, ...]], fraction: float, later: int
) -> None:
    clock = FakeClock()
    config = StoreConfig(default_retention_days=0)
    async with open_store(url, config=config, clock=clock) as store:
        await play_ops(store, clock, history)
        h = store.history(SCOPE)
        before = await h.events()
        last = max((e.seq for e in before), default=0)
        p = round(fraction * (last + 1))
        clock.advance(timedelta(seconds=later))
        accessor = store.task_store(SCOPE.dag_id, SCOPE.run_id, SCOPE.task_id)
        items_before = await accessor.items()

        planned = await h.rewind(At.seq(p), dry_run=True)
        assert await h.events() == before, "a dry run writes nothing"
        prefix, _ = upto(before, p)
        wanted = fold(prefix, clock.now)  # the state at p, expiry as of now
        assert planned.diff.added == {k: v for k, v in wanted.items() if k not in items_before}
        assert planned.diff.removed == {k: v for k, v in items_before.items() if k not in wanted}
        assert set(planned.diff.changed) <= set(planned.set)

        result = await h.rewind(At.seq(p))
        assert await accessor.items() == wanted
        after = await h.events()
        assert after[: len(before)] == before, "every earlier event is still in history"
        new = after[len(before) :]
        assert all(e.rewound_to == result.rewound_to for e in new)
        assert {e.kind for e in new} <= {"set", "delete"}
        assert sorted(e.key for e in new if e.kind == "set") == sorted(result.set)
        assert sorted(e.key for e in new if e.kind == "delete") == sorted(result.deleted)
        # A value comes back with the expiry it was first written with.
        originals = {e.key: e for e in prefix if e.kind == "set"}
        for e in new:
            if e.kind == "set":
                assert e.expires_at == originals[e.key].expires_at
        assert result.version == await accessor.version()
        assert (await store.verify()).ok

        again = await h.rewind(At.seq(p))
        assert (again.set, again.deleted, again.seq) == ([], [], None), "already there"
        assert await h.events() == after


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    history=histories,
    fraction=st.floats(0, 1),
    later=st.integers(0, 30),
)
def test_rewind_makes_current_values_the_state_at_the_point(
    backend: str, history: list[Any], fraction: float, later: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = "memory://" if backend == "memory" else f"sqlite:///{Path(tmp) / 'trail.db'}"
        anyio.run(rewind_and_observe, url, history, fraction, later)
