"""Group commit: batching, per-caller errors, back-pressure and shutdown, on every backend."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.lowlevel
import pytest

from eventstore import StoreConfig, TaskScope
from eventstore.log.backends.base import LogBackend, WriteTransaction
from eventstore.log.backends.memory import MemoryBackend
from eventstore.log.errors import (
    ConcurrencyError,
    EventStoreError,
    StaleAttemptError,
    StoreClosedError,
)
from eventstore.log.requests import AppendRequest, AppendResult, SetOp
from eventstore.log.writer import GroupCommitWriter
from tests.conftest import FakeClock, StoreFactory


class Gate:
    """Holds every commit of a backend at the door until opened; counts the batches it let in."""

    def __init__(self, backend: LogBackend, monkeypatch: pytest.MonkeyPatch) -> None:
        self.opened = anyio.Event()
        self.arrived = anyio.Event()
        self.batches = 0
        write = backend.write

        @asynccontextmanager
        async def gated() -> AsyncIterator[WriteTransaction]:
            self.arrived.set()
            await self.opened.wait()
            self.batches += 1
            async with write() as tx:
                yield tx

        monkeypatch.setattr(backend, "write", gated)

    async def until_waiting(self) -> None:
        await self.arrived.wait()


async def settle() -> None:
    """Let every runnable task run until it blocks."""
    await anyio.wait_all_tasks_blocked()


async def test_concurrent_writes_share_one_transaction(
    make_store: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with make_store() as store:
        gate = Gate(store.backend, monkeypatch)
        plug = store.task_store("d", "r", "plug")
        results: dict[int, AppendResult] = {}

        async def write(i: int) -> None:
            results[i] = await store.task_store("d", "r", f"t{i}").set("k", i)

        async with anyio.create_task_group() as tg:
            tg.start_soon(plug.set, "k", 0)
            await gate.until_waiting()
            for i in range(50):
                tg.start_soon(write, i)
            await settle()
            gate.opened.set()
        assert gate.batches == 2  # the plug alone, then all fifty together
        assert len({r.recorded_at for r in results.values()}) == 1
        assert sorted(r.seq for r in results.values()) == list(range(2, 52))
        for i in range(50):
            assert await store.task_store("d", "r", f"t{i}").get("k") == i


async def test_writers_started_together_share_the_first_leaders_commit(
    make_store: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with make_store() as store:
        commits = 0
        write_tx = store.backend.write

        @asynccontextmanager
        async def counted() -> AsyncIterator[WriteTransaction]:
            nonlocal commits
            async with write_tx() as tx:
                yield tx
            commits += 1

        monkeypatch.setattr(store.backend, "write", counted)
        async with anyio.create_task_group() as tg:
            for i in range(10):
                tg.start_soon(store.task_store("d", "r", f"t{i}").set, "k", i)
        # The first lets the nine ready behind it queue before it commits, even where the
        # commit itself never yields (SQLite's runs on the loop thread).
        assert commits == 1


async def test_a_lone_writer_lets_other_tasks_run_at_every_write(make_store: StoreFactory) -> None:
    async with make_store() as store:
        ts = store.task_store("d", "r", "t")
        turns = 0
        seen: list[int] = []

        async def other_task() -> None:
            nonlocal turns
            while True:
                turns += 1
                await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as tg:
            tg.start_soon(other_task)
            for i in range(20):
                await ts.set("k", i)
                seen.append(turns)
            tg.cancel_scope.cancel()
        # Every write is a checkpoint: the other task ran during each of them.
        assert all(later > earlier for earlier, later in itertools.pairwise(seen))


async def test_a_bad_write_in_a_batch_fails_alone(
    make_store: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with make_store() as store:
        await store.task_store("d", "r", "fenced", try_number=2).set("k", "try 2")
        await store.task_store("d", "r", "versioned").set("k", "v1")
        gate = Gate(store.backend, monkeypatch)
        outcomes: dict[str, object] = {}

        async def attempt(name: str, call: object) -> None:
            try:
                outcomes[name] = await call  # type: ignore[misc]
            except EventStoreError as error:
                outcomes[name] = error

        async with anyio.create_task_group() as tg:
            tg.start_soon(store.task_store("d", "r", "plug").set, "k", 0)
            await gate.until_waiting()
            tg.start_soon(attempt, "good 1", store.task_store("d", "r", "a").set("k", 1))
            tg.start_soon(
                attempt,
                "stale",
                store.task_store("d", "r", "fenced", try_number=1).set("k", "zombie"),
            )
            tg.start_soon(
                attempt,
                "conflict",
                store.task_store("d", "r", "versioned").set("k", "v2", expected_version=0),
            )
            tg.start_soon(attempt, "good 2", store.task_store("d", "r", "b").set("k", 2))
            await settle()
            gate.opened.set()
        assert gate.batches == 2
        assert isinstance(outcomes["stale"], StaleAttemptError)
        assert isinstance(outcomes["conflict"], ConcurrencyError)
        assert isinstance(outcomes["good 1"], AppendResult)
        assert isinstance(outcomes["good 2"], AppendResult)
        assert await store.task_store("d", "r", "a").get("k") == 1
        assert await store.task_store("d", "r", "b").get("k") == 2
        assert await store.task_store("d", "r", "fenced").get("k") == "try 2"
        assert await store.task_store("d", "r", "versioned").get("k") == "v1"


async def test_a_failed_transaction_fails_every_write_in_it(
    make_store: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with make_store() as store:

        @asynccontextmanager
        async def broken() -> AsyncIterator[WriteTransaction]:
            raise EventStoreError("disk on fire")
            yield  # pragma: no cover

        monkeypatch.setattr(store.backend, "write", broken)
        errors: list[BaseException] = []

        async def write(i: int) -> None:
            with pytest.raises(EventStoreError, match="disk on fire") as caught:
                await store.task_store("d", "r", f"t{i}").set("k", i)
            errors.append(caught.value)

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                for i in range(10):
                    tg.start_soon(write, i)
        assert len(errors) == 10


async def test_a_full_queue_makes_writers_wait(
    make_store: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = StoreConfig(max_pending=8, max_batch=4)
    async with make_store(config) as store:
        gate = Gate(store.backend, monkeypatch)
        returned = 0

        async def write(i: int) -> None:
            nonlocal returned
            await store.task_store("d", "r", f"t{i}").set("k", i)
            returned += 1

        async with anyio.create_task_group() as tg:
            tg.start_soon(write, -1)  # taken by the writer, held at the gate
            await gate.until_waiting()
            for i in range(40):
                tg.start_soon(write, i)
            await settle()
            # The queue holds max_pending writes; the other callers wait for room, holding
            # nothing in the queue.
            assert store._writer.queued == 8
            assert returned == 0
            gate.opened.set()
        assert returned == 41
        assert store._writer.queued == 0
        # Batches never exceed max_batch: 1 (the first) + 40 / 4.
        assert gate.batches == 11
        for i in range(40):
            assert await store.task_store("d", "r", f"t{i}").get("k") == i


async def test_closing_commits_queued_writes_and_fails_waiting_ones(
    make_store: StoreFactory, backend_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = StoreConfig(max_pending=5, max_batch=100)
    outcomes: dict[int, object] = {}
    async with make_store(config) as store:
        gate = Gate(store.backend, monkeypatch)

        async def write(i: int) -> None:
            try:
                outcomes[i] = await store.task_store("d", "r", f"t{i}").set("k", i)
            except StoreClosedError as error:
                outcomes[i] = error

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(write, -1)
                await gate.until_waiting()
                for i in range(20):
                    tg.start_soon(write, i)
                await settle()
                # Closing waits for the commits in flight and queued, so it runs beside the
                # callers while the gate still holds the first commit.
                tg.start_soon(store.aclose)
                await settle()
                gate.opened.set()
        with pytest.raises(StoreClosedError, match="store is closed"):
            await store.task_store("d", "r", "late").set("k", 1)
        committed = {i for i, o in outcomes.items() if isinstance(o, AppendResult)}
        failed = {i for i, o in outcomes.items() if isinstance(o, StoreClosedError)}
        # The first write and the five queued ones commit; the fifteen waiting for room fail.
        assert len(committed) == 6
        assert len(failed) == 15
        assert committed | failed == set(range(-1, 20))
        assert sorted(o.seq for o in outcomes.values() if isinstance(o, AppendResult)) == list(
            range(1, 7)
        )
    if backend_url == "memory://":
        return  # closed, the in-memory log is gone; the durable ones are read back below
    async with make_store(config) as reopened:
        for i in committed:
            assert await reopened.task_store("d", "r", f"t{i}").get("k") == i
        for i in failed:
            assert await reopened.task_store("d", "r", f"t{i}").get("k") is None


async def test_a_leader_cancelled_mid_commit_finishes_it_and_hands_the_lead_on(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = MemoryBackend()
    gate = Gate(backend, monkeypatch)
    writer = GroupCommitWriter(backend, StoreConfig(), clock)
    outcomes: dict[int, object] = {}

    async def write(i: int) -> None:
        request = AppendRequest(scope=TaskScope("d", "r", f"t{i}"), ops=[SetOp("k", b"1")])
        outcomes[i] = await writer.append(request)

    leader = anyio.CancelScope()

    async def write_as_leader() -> None:
        with leader:
            await write(0)  # leads: its commit waits at the gate

    with anyio.fail_after(5):
        async with anyio.create_task_group() as callers:
            callers.start_soon(write_as_leader)
            await gate.until_waiting()
            for i in range(1, 10):
                callers.start_soon(write, i)
            await settle()
            leader.cancel()
            await settle()
            gate.opened.set()  # the commit in flight finishes, shielded from the cancel
    # The cancelled leader's own write landed (and it was told so: the cancellation reaches it
    # at its next checkpoint); the nine queued behind it were committed by the next leader.
    assert all(isinstance(outcomes[i], AppendResult) for i in range(10))
    assert gate.batches == 2
    assert sorted(row.seq for row in await backend.select_current()) == list(range(1, 11))
    assert writer.queued == 0
    await writer.aclose()
    with pytest.raises(StoreClosedError, match="store is closed"):
        await writer.append(AppendRequest(scope=TaskScope("d", "r", "late"), ops=[]))
    await backend.aclose()


async def test_a_next_leader_cancelled_before_its_turn_leaves_its_batch_committed(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = MemoryBackend()
    gate = Gate(backend, monkeypatch)
    writer = GroupCommitWriter(backend, StoreConfig(), clock)
    outcomes: dict[int, object] = {}

    async def write(i: int) -> None:
        request = AppendRequest(scope=TaskScope("d", "r", f"t{i}"), ops=[SetOp("k", b"1")])
        outcomes[i] = await writer.append(request)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as callers:
            callers.start_soon(write, 0)  # leads: its commit waits at the gate
            await gate.until_waiting()
            async with anyio.create_task_group() as head:
                head.start_soon(write, 1)  # opens the next batch: the lead comes to it next
                await settle()
                for i in range(2, 10):
                    callers.start_soon(write, i)
                await settle()
                head.cancel_scope.cancel()
            gate.opened.set()
    # The head gave its turn up; the first leader committed the next batch too, the head's
    # write with it.
    assert 1 not in outcomes
    assert all(isinstance(outcomes[i], AppendResult) for i in (0, *range(2, 10)))
    assert gate.batches == 2
    assert len(await backend.select_current()) == 10
    await backend.aclose()


async def test_a_next_leader_cancelled_as_the_lead_comes_to_it_still_commits(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = MemoryBackend()
    writer = GroupCommitWriter(backend, StoreConfig(), clock)
    head = anyio.CancelScope()
    outcomes: dict[int, object] = {}
    write_tx = backend.write
    arrived, opened = anyio.Event(), anyio.Event()
    commits = 0

    @asynccontextmanager
    async def cancel_the_head_after_the_first_commit() -> AsyncIterator[WriteTransaction]:
        nonlocal commits
        arrived.set()
        await opened.wait()
        async with write_tx() as tx:
            yield tx
        commits += 1
        if commits == 1:
            # The next batch's head is cancelled the moment before the lead is handed to it.
            head.cancel()

    monkeypatch.setattr(backend, "write", cancel_the_head_after_the_first_commit)

    async def write(i: int) -> None:
        request = AppendRequest(scope=TaskScope("d", "r", f"t{i}"), ops=[SetOp("k", b"1")])
        outcomes[i] = await writer.append(request)

    async def write_as_head() -> None:
        with head:
            await write(1)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as callers:
            callers.start_soon(write, 0)  # leads: its commit waits for `opened`
            await arrived.wait()
            callers.start_soon(write_as_head)  # opens the next batch
            await settle()
            for i in range(2, 10):
                callers.start_soon(write, i)
            await settle()
            opened.set()
    # Cancelled with the lead already on its way, the head took it and committed its batch.
    assert head.cancel_called
    assert 1 not in outcomes
    assert all(isinstance(outcomes[i], AppendResult) for i in (0, *range(2, 10)))
    assert commits == 2
    assert len(await backend.select_current()) == 10
    await backend.aclose()


class Interrupted(BaseException):
    """Stands for KeyboardInterrupt or SystemExit arriving in the middle of a commit."""


async def test_an_interrupted_commit_fails_every_waiting_write_instead_of_hanging(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = MemoryBackend()
    gate = Gate(backend, monkeypatch)
    writer = GroupCommitWriter(backend, StoreConfig(), clock)
    outcomes: dict[int, BaseException] = {}

    async def write(i: int) -> None:
        request = AppendRequest(scope=TaskScope("d", "r", f"t{i}"), ops=[SetOp("k", b"1")])
        try:
            await writer.append(request)
        except BaseException as error:
            outcomes[i] = error

    write_tx = backend.write

    @asynccontextmanager
    async def interrupted() -> AsyncIterator[WriteTransaction]:
        await gate.opened.wait()
        async with write_tx() as tx:
            yield tx
            raise Interrupted

    monkeypatch.setattr(backend, "write", interrupted)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as callers:
            for i in range(10):
                callers.start_soon(write, i)
            await settle()
            gate.opened.set()
    assert isinstance(outcomes[0], Interrupted)  # the leader hears what stopped it
    assert all(isinstance(outcomes[i], (Interrupted, StoreClosedError)) for i in range(1, 10))
    with pytest.raises(StoreClosedError, match="store is closed"):
        await writer.append(AppendRequest(scope=TaskScope("d", "r", "late"), ops=[]))
    with anyio.fail_after(5):
        await writer.aclose()
    await backend.aclose()
