"""The client's rewind and live feed: `remote.history(scope).rewind(...)`,
`remote.subscribe(...)`, through a real service."""

from __future__ import annotations

import anyio
import pytest

from eventstore import ConcurrencyError, RecordedEvent, ScopeMatch, TaskScope
from eventstore.client import PermissionDeniedError, connect, connect_blocking
from projections import At
from service.service_helpers import Service


async def test_a_remote_subscriber_gets_events_then_new_ones(service: Service, dag: str) -> None:
    async with connect(service.base_url, token=service.token()) as remote:
        ts = remote.task_store(dag, "r", "t")
        first = await ts.set("offset", 1)
        assert first.seq is not None
        got: list[RecordedEvent] = []
        async with remote.subscribe(first.seq - 1, ScopeMatch(dag_id=dag)) as events:
            async for event in events:
                got.append(event)
                if len(got) == 1:
                    await ts.set("offset", 2)
                    await remote.task_store(dag, "r", "other").set("k", "x")
                if len(got) == 3:
                    break
        assert [(e.scope.task_id, e.value) for e in got] == [  # type: ignore[union-attr]
            ("t", 1),
            ("t", 2),
            ("other", "x"),
        ]
        assert [e.seq for e in got] == [first.seq, first.seq + 1, first.seq + 2]


async def test_a_remote_subscription_to_one_task_instance(service: Service, dag: str) -> None:
    async with connect(service.base_url, token=service.task_token(dag)) as remote:
        await remote.task_store(dag, "r", "t").set("k", 1)
        async with remote.subscribe(scope=TaskScope(dag, "r", "t")) as events:
            with anyio.fail_after(30):
                event = await events.__anext__()
        assert (event.key, event.value) == ("k", 1)
        async with remote.subscribe(scope=TaskScope(dag, "r", "other")) as other:
            with pytest.raises(PermissionDeniedError, match="follows only its events"):
                await other.__anext__()


async def test_a_remote_rewind_with_a_dry_run_first(service: Service, dag: str) -> None:
    async with connect(service.base_url, token=service.token()) as remote:
        ts = remote.task_store(dag, "r", "t")
        await ts.set("offset", 1)
        await ts.set("offset", 2)
        history = remote.history(TaskScope(dag, "r", "t"))
        plan = await history.rewind(At.version(1), dry_run=True)
        assert (plan.dry_run, plan.diff.changed) == (True, {"offset": (2, 1)})
        with pytest.raises(ConcurrencyError, match="is at version 2"):
            await history.rewind(At.version(1), expected_version=1)
        result = await history.rewind(At.version(1), expected_version=2)
        assert (result.set, result.version, await ts.get("offset")) == (["offset"], 3, 1)


def test_the_blocking_client_rewinds(service: Service, dag: str) -> None:
    with connect_blocking(service.base_url, token=service.token()) as remote:
        ts = remote.task_store(dag, "r", "t")
        ts.set("offset", 1)
        ts.set("offset", 2)
        result = remote.history(TaskScope(dag, "r", "t")).rewind(At.version(1))
        assert (result.set, ts.get("offset")) == (["offset"], 1)
