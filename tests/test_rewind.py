"""Rewind a scope to a past point: what it appends, fencing, optimistic concurrency, expiry,
compaction, sensitive and sealed values, and the blocking facade."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import anyio
import pytest

from eventstore import (
    NEVER_EXPIRE,
    ConcurrencyError,
    HistoryCompactedError,
    StaleAttemptError,
    StoreConfig,
    TaskScope,
    open_store,
)
from eventstore.blocking import open_blocking_store
from eventstore.log.envelope import is_sensitive
from eventstore.log.errors import ReadOnlyStoreError
from projections import At
from tests.conftest import FakeClock, StoreFactory
from tests.test_erasure import encrypted

SCOPE = TaskScope("etl", "run_1", "ingest")
HOUR = timedelta(hours=1)


async def two_tries(store, clock: FakeClock):  # type: ignore[no-untyped-def]
    one = store.task_store("etl", "run_1", "ingest", try_number=1)
    await one.set_many({"job_id": "spark-1", "offset": 100}, retention=NEVER_EXPIRE)
    clock.advance()
    await one.set("offset", 200, retention=NEVER_EXPIRE)
    clock.advance()
    two = store.task_store("etl", "run_1", "ingest", try_number=2)
    await two.set("offset", 900, retention=NEVER_EXPIRE)
    await two.delete("job_id")
    await two.set("partial", [1, 2], retention=NEVER_EXPIRE)
    clock.advance()
    return two


async def test_rewind_to_the_end_of_a_try_brings_back_what_it_left(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    async with make_store() as store:
        two = await two_tries(store, clock)
        h = store.history(SCOPE)
        before = await h.events()

        result = await h.rewind(At.end_of_try(1), actor="api:ops")

        assert await two.items() == {"job_id": "spark-1", "offset": 200}
        assert sorted(result.set) == ["job_id", "offset"]
        assert result.deleted == ["partial"]
        assert result.rewound_to == 3  # try 1's last write
        assert result.version == before[-1].version + 3
        new = (await h.events())[len(before) :]
        assert [(e.kind, e.key, e.actor, e.rewound_to, e.try_number) for e in new] == [
            ("set", "job_id", "api:ops", 3, None),
            ("set", "offset", "api:ops", 3, None),
            ("delete", "partial", "api:ops", 3, None),
        ]
        assert all(e.rewound_to is None for e in before), "task writes are not rewinds"
        assert (await store.verify()).ok


async def test_rewind_to_before_the_first_event_deletes_everything(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    async with make_store() as store:
        two = await two_tries(store, clock)
        result = await store.history(SCOPE).rewind(At.version(0))
        assert await two.items() == {}
        assert sorted(result.deleted) == ["offset", "partial"]
        assert result.rewound_to == 0


async def test_a_dry_run_shows_the_diff_and_writes_nothing(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    async with make_store() as store:
        two = await two_tries(store, clock)
        h = store.history(SCOPE)
        version = await two.version()

        plan = await h.rewind(At.end_of_try(1), dry_run=True)

        assert plan.dry_run
        assert (plan.seq, plan.version) == (None, version)
        assert plan.diff.added == {"job_id": "spark-1"}
        assert plan.diff.removed == {"partial": [1, 2]}
        assert plan.diff.changed == {"offset": (900, 200)}
        assert await two.version() == version
        assert await two.get("offset") == 900


async def test_a_rewind_keeps_each_value_original_expiry_and_leaves_expired_keys_absent(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    async with make_store() as store:
        ts = store.task_store("etl", "run_1", "ingest", try_number=1)
        await ts.set("short", "s", retention=HOUR)
        await ts.set("long", "l", retention=10 * HOUR)
        first = clock.now
        clock.advance()
        await ts.delete("short")
        await ts.delete("long")
        clock.advance(2 * HOUR)  # "short" would have expired by now

        await store.history(SCOPE).rewind(At.time(first))

        assert await ts.items() == {"long": "l"}
        (event,) = await store.history(SCOPE).timeline("long", after_seq=4)
        assert event.expires_at == first + 10 * HOUR


async def test_a_rewind_is_fenced_like_any_write_of_its_try(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    async with make_store() as store:
        two = await two_tries(store, clock)
        h = store.history(SCOPE)
        with pytest.raises(StaleAttemptError, match="try 1"):
            await h.rewind(At.end_of_try(1), try_number=1)
        assert await two.get("offset") == 900, "a stale try's rewind is not recorded"
        result = await h.rewind(At.end_of_try(1), try_number=3)
        assert {e.try_number for e in await h.events(after_seq=6)} == {3}
        assert result.set
        with pytest.raises(StaleAttemptError):
            await two.set("offset", 1)  # the rewind's try fences try 2 from now on


async def test_a_rewind_expecting_a_stale_version_raises_and_writes_nothing(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    async with make_store() as store:
        two = await two_tries(store, clock)
        version = await two.version()
        h = store.history(SCOPE)
        with pytest.raises(ConcurrencyError, match=f"expected {version - 1}"):
            await h.rewind(At.end_of_try(1), expected_version=version - 1)
        assert await two.version() == version
        with pytest.raises(ConcurrencyError):
            await h.rewind(At.end_of_try(1), expected_version=version - 1, dry_run=True)
        result = await h.rewind(At.end_of_try(1), expected_version=version)
        assert result.version == version + 3


async def test_rewinds_racing_other_writes_plan_again_and_land_whole(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    async with make_store() as store:
        two = await two_tries(store, clock)
        h = store.history(SCOPE)

        async def writer() -> None:
            for n in range(30):
                await two.set(f"noise{n % 3}", n, retention=NEVER_EXPIRE)

        async with anyio.create_task_group() as tg:
            tg.start_soon(writer)
            result = await h.rewind(At.end_of_try(1))
        # The rewind's events are one block, and right after it the scope was as at try 1's end.
        assert result.seq is not None
        assert await h.state(At.seq(result.seq)) == {"job_id": "spark-1", "offset": 200}


async def test_a_rewind_to_a_compacted_point_raises_history_compacted(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    async with make_store() as store:
        ts = store.task_store("etl", "run_1", "ingest", try_number=1)
        await ts.set("gone", 1, retention=HOUR)
        await ts.set("kept", 1, retention=NEVER_EXPIRE)
        clock.advance(2 * HOUR)
        await ts.set("kept", 2, retention=NEVER_EXPIRE)
        await store.compact()
        with pytest.raises(HistoryCompactedError, match="earliest point still answerable"):
            await store.history(SCOPE).rewind(At.seq(1))
        assert await ts.get("kept") == 2


async def test_a_rewound_sensitive_value_stays_sensitive(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    async with make_store() as store:
        ts = store.task_store("etl", "run_1", "ingest", try_number=1)
        await ts.set("token", "secret-1", sensitive=True, retention=NEVER_EXPIRE)
        clock.advance()
        await ts.set("token", "plain-2", retention=NEVER_EXPIRE)

        result = await store.history(SCOPE).rewind(At.version(1))

        assert result.set == ["token"]
        assert await ts.get("token") == "secret-1"
        row = await store.read(SCOPE, "token")
        assert row is not None
        assert is_sensitive(row.value)
        events = await store.history(SCOPE).events(mask=True)
        assert (events[-1].value, events[-1].sensitive) == (None, True)


async def test_a_rewind_on_an_encrypted_store_seals_the_value_again(
    backend_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    config = encrypted(backend_url, tmp_path)
    async with open_store(backend_url, config=config, clock=clock) as store:
        ts = store.task_store("etl", "run_1", "ingest", try_number=1)
        await ts.set("token", "zebra-sesame-4471", sensitive=True, retention=NEVER_EXPIRE)
        await ts.set("n", 1.0, retention=NEVER_EXPIRE)
        clock.advance()
        await ts.set_many({"token": "other", "n": 2}, retention=NEVER_EXPIRE)
        await store.history(SCOPE).rewind(At.version(2))
        assert await ts.items() == {"token": "zebra-sesame-4471", "n": 1.0}
        assert type(await ts.get("n")) is float, "the value's JSON comes back byte for byte"
        row = await store.read(SCOPE, "token")
        assert row is not None
        assert b"zebra" not in row.value
        assert is_sensitive(row.value)
        assert (await store.verify()).ok
    if backend_url == "memory://":
        return  # nothing to reopen
    async with open_store(backend_url, config=config, clock=clock) as store:
        assert await store.task_store("etl", "run_1", "ingest").get("token") == "zebra-sesame-4471"


async def test_a_rewind_to_where_the_scope_is_appends_nothing(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    async with make_store() as store:
        two = await two_tries(store, clock)
        version = await two.version()
        result = await store.history(SCOPE).rewind(At.end_of_try(2))
        assert (result.set, result.deleted, result.seq, result.version) == ([], [], None, version)


def test_the_blocking_store_rewinds(tmp_path: Path) -> None:
    with open_blocking_store(f"sqlite:///{tmp_path / 'trail.db'}") as store:
        ts = store.task_store("etl", "run_1", "ingest", try_number=1)
        ts.set("offset", 1)
        ts.set("offset", 2)
        history = store.history(SCOPE)
        assert history.rewind(At.version(1), dry_run=True).diff.changed == {"offset": (2, 1)}
        result = history.rewind(At.version(1))
        assert (result.set, ts.get("offset")) == (["offset"], 1)
        assert history.state(At.version(2)) == {"offset": 2}


async def test_a_read_only_store_plans_a_rewind_but_does_not_write_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'trail.db'}"
    async with open_store(url) as store:
        ts = store.task_store("etl", "run_1", "ingest", try_number=1)
        await ts.set("offset", 1, retention=NEVER_EXPIRE)
        await ts.set("offset", 2, retention=NEVER_EXPIRE)
    async with open_store(url, config=StoreConfig(read_only=True)) as store:
        history = store.history(SCOPE)
        plan = await history.rewind(At.version(1), dry_run=True)
        assert plan.diff.changed == {"offset": (2, 1)}
        with pytest.raises(ReadOnlyStoreError, match="read-only"):
            await history.rewind(At.version(1))
        assert await store.version(SCOPE) == 2
