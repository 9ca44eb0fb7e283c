"""The live feed: `store.subscribe` catches up, follows new commits in position order without
skipping or repeating one, across processes and replicas, and ends when the store closes."""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import pytest

from eventstore import (
    RecordedEvent,
    ScopeMatch,
    Store,
    StoreClosedError,
    StoreConfig,
    TaskScope,
    generate_master_key,
    open_store,
)
from eventstore.log.scopes import scope_key
from tests.conftest import FakeClock, StoreFactory, postgres_schema_url

WRITER = Path(__file__).with_name("feed_writer.py")
SCOPE = TaskScope("etl", "run_1", "ingest")


async def take(events: object, n: int) -> list[RecordedEvent]:
    taken: list[RecordedEvent] = []
    async for event in events:  # type: ignore[attr-defined]
        taken.append(event)
        if len(taken) == n:
            break
    return taken


async def test_a_subscriber_catches_up_then_follows_new_commits(
    make_store: StoreFactory,
) -> None:
    async with make_store() as store:
        ts = store.task_store("etl", "run_1", "ingest", try_number=1)
        for i in range(5):
            await ts.set("offset", i)
        async with store.subscribe() as events:
            caught_up = await take(events, 5)
            assert [e.value for e in caught_up] == [0, 1, 2, 3, 4]

            async def later() -> None:
                for i in range(5, 8):
                    await ts.set("offset", i)
                await store.asset_store(name="orders").set("watermark", 1)

            async with anyio.create_task_group() as tg:
                tg.start_soon(later)
                followed = await take(events, 4)
        assert [e.seq for e in caught_up + followed] == list(range(1, 10))
        assert [e.value for e in followed] == [5, 6, 7, 1]
        assert followed[-1].scope == store.asset_store(name="orders").scope
        assert followed[0].try_number == 1


async def test_a_subscription_starts_after_the_position_it_is_given(
    make_store: StoreFactory,
) -> None:
    async with make_store() as store:
        ts = store.task_store("etl", "run_1", "ingest")
        for i in range(6):
            await ts.set("offset", i)
        events = await take(store.subscribe(after_seq=4), 2)
        assert [e.seq for e in events] == [5, 6]


async def test_a_subscription_to_one_scope_or_a_match_leaves_the_others_out(
    make_store: StoreFactory,
) -> None:
    async with make_store() as store:
        for task in ("a", "b", "a", "c", "a"):
            await store.task_store("etl", "run_1", task).set("k", task)
        await store.task_store("etl", "run_2", "a").set("k", "other run")
        await store.asset_store(name="orders").set("watermark", 1)
        one = await take(store.subscribe(scope=TaskScope("etl", "run_1", "a")), 3)
        assert [e.seq for e in one] == [1, 3, 5]
        runs = await take(store.subscribe(scope=ScopeMatch(dag_id="etl", run_id="run_1")), 5)
        assert [e.seq for e in runs] == [1, 2, 3, 4, 5]
        assets = await take(store.subscribe(scope=ScopeMatch(kind="asset")), 1)
        assert [e.seq for e in assets] == [7]
        # A scope written for the first time after the subscription began is followed too.
        fresh = store.subscribe(scope=TaskScope("etl", "run_3", "new"))
        async with anyio.create_task_group() as tg:
            tg.start_soon(store.task_store("etl", "run_3", "new").set, "k", 1)
            (event,) = await take(fresh, 1)
        assert (event.seq, event.value) == (8, 1)


async def test_a_masking_subscription_hides_sensitive_values(make_store: StoreFactory) -> None:
    async with make_store() as store:
        ts = store.task_store("etl", "run_1", "ingest")
        await ts.set("token", "s3cret", sensitive=True)
        await ts.set("offset", 1)
        masked = await take(store.subscribe(mask=True), 2)
        assert [(e.value, e.sensitive) for e in masked] == [(None, True), (1, False)]
        plain = await take(store.subscribe(), 1)
        assert plain[0].value == "s3cret"


async def test_a_subscription_ends_when_the_store_closes_from_another_task(
    make_store: StoreFactory,
) -> None:
    seen: list[int] = []
    ended = False
    async with make_store() as store:
        await store.task_store("etl", "run_1", "ingest").set("offset", 1)
        got_both = anyio.Event()

        async def follow() -> None:
            nonlocal ended
            async for event in store.subscribe():
                seen.append(event.seq)
                if len(seen) == 2:
                    got_both.set()
            ended = True

        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            await store.task_store("etl", "run_1", "ingest").set("offset", 2)
            await got_both.wait()  # the subscriber now waits for a third event
            await store.aclose()  # from this task, not the one iterating
    assert seen == [1, 2]
    assert ended, "the iteration ended by itself"
    with pytest.raises(StoreClosedError):
        store.subscribe()


async def test_a_slow_subscriber_holds_one_page_at_most(make_store: StoreFactory) -> None:
    async with make_store() as store:
        ts = store.task_store("etl", "run_1", "ingest")
        await ts.set_many({f"k{i}": i for i in range(50)})
        events = store.subscribe(page=8)
        first = await take(events, 1)
        assert len(events._buffer) == 7  # the rest of its first page, not the whole log
        rest = await take(events, 49)
        assert [e.seq for e in first + rest] == list(range(1, 51))


async def test_subscribe_rejects_bad_arguments(make_store: StoreFactory) -> None:
    async with make_store() as store:
        with pytest.raises(ValueError, match="after_seq must be an int >= 0"):
            store.subscribe(after_seq=-1)
        with pytest.raises(TypeError, match="scope must be a TaskScope"):
            store.subscribe(scope="etl/run_1")  # type: ignore[arg-type]


# --- other processes --------------------------------------------------------------------------


async def follow_while_processes_write(url: str) -> None:
    """Two writer processes append while a subscriber here reads, disconnects every so often
    and resumes after the last position it saw: it must see every position once, in order."""
    async with open_store(url, config=StoreConfig()) as store:
        await store.task_store("feed", "setup", "t").set("ready", True)  # the schema exists
        writers = [
            await anyio.open_process([sys.executable, str(WRITER), url, name, "400", "4"])
            for name in ("p1", "p2")
        ]
        seen: list[RecordedEvent] = []
        stretches = 0
        try:
            with anyio.fail_after(120):  # a hang guard; a pass does not depend on it
                while True:
                    done = all(w.returncode is not None for w in writers)
                    if done and seen[-1].seq == (await store.backend.select_head()).last_seq:
                        break
                    resume = seen[-1].seq if seen else 0
                    # Read a stretch, then disconnect, as a client would; a stretch also ends
                    # when nothing arrives for a moment, to look whether the writers are done.
                    async with store.subscribe(after_seq=resume) as events:
                        stretches += 1
                        with anyio.move_on_after(0.5):
                            async for event in events:
                                seen.append(event)
                                if len(seen) % 37 == 0:
                                    break
                    for w in writers:
                        if w.returncode is None:
                            with anyio.move_on_after(0.01):
                                await w.wait()
        finally:
            for w in writers:
                await w.wait()
        assert [w.returncode for w in writers] == [0, 0]
        log = [row async for row in store.backend.select_all_events()]
        seqs = [e.seq for e in seen]
        assert seqs == list(range(1, len(log) + 1)), "every position once, in order"
        assert [(e.seq, e.version, e.key) for e in seen] == [(r.seq, r.version, r.key) for r in log]
        runs = {e.scope.run_id for e in seen if isinstance(e.scope, TaskScope)}
        assert runs == {"setup", "p1", "p2"}
        assert stretches > 10, "the subscriber disconnected and resumed many times"


async def test_a_resuming_subscriber_sees_every_position_of_two_writer_processes_on_sqlite(
    tmp_path: Path,
) -> None:
    await follow_while_processes_write(f"sqlite:///{tmp_path / 'trail.db'}")


async def test_a_resuming_subscriber_sees_every_position_of_two_writer_processes_on_postgres() -> (
    None
):
    with postgres_schema_url() as url:
        await follow_while_processes_write(url)


async def test_commits_of_another_store_on_the_same_database_reach_a_subscriber(
    tmp_path: Path, clock: FakeClock
) -> None:
    url = f"sqlite:///{tmp_path / 'trail.db'}"
    async with open_store(url, clock=clock) as reader, open_store(url, clock=clock) as writer:
        events = reader.subscribe()
        got: list[RecordedEvent] = []

        async def follow(store: Store) -> None:
            got.extend(await take(events, 3))

        async with anyio.create_task_group() as tg:
            tg.start_soon(follow, reader)
            ts = writer.task_store("etl", "run_1", "ingest")
            for i in range(3):
                await ts.set("offset", i)
        assert [e.value for e in got] == [0, 1, 2]


async def test_a_subscriber_catching_up_past_an_erasure_gets_the_values_erased(
    make_store: StoreFactory,
) -> None:
    async with make_store() as store:
        ts = store.task_store("etl", "run_1", "ingest")
        await ts.set("token", "s3cret")
        await store.task_store("etl", "run_1", "other").set("k", "kept")
        await store.erase(SCOPE)
        events = await take(store.subscribe(), 4)
        assert [(e.kind, e.value, e.erased) for e in events] == [
            ("set", None, True),
            ("set", "kept", False),
            ("clear", None, False),
            ("erased", None, False),
        ]


async def test_a_matching_subscription_fetches_the_data_keys_of_its_scopes_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'trail.db'}"
    config = StoreConfig(master_keys=(generate_master_key(),))
    async with open_store(url, config) as store:
        await store.task_store("etl", "run_1", "ingest").set("k", "followed")
        await store.task_store("other", "run_1", "ingest").set("k", "not followed")
    async with open_store(url, config) as store:  # no data key at hand yet
        fetched: list[str] = []
        load_keys = store.vault.load_keys

        async def recording(scope_key: str) -> None:
            fetched.append(scope_key)
            await load_keys(scope_key)

        monkeypatch.setattr(store.vault, "load_keys", recording)
        events = await take(store.subscribe(scope=ScopeMatch(dag_id="etl")), 1)
        assert [e.value for e in events] == ["followed"]
        assert fetched == [scope_key(SCOPE)]
