"""One compactor at a time on a database: across processes on SQLite (a flock beside the file),
across stores and replicas on PostgreSQL (an advisory lock), within one backend in memory."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import anyio
import pytest
from conftest import FakeClock, postgres_schema_url

from eventstore import NEVER_EXPIRE, CompactionRunningError, Store, open_store
from projections.compaction import CompactionReport

COMPACTOR = Path(__file__).with_name("compactor.py")
TASKS, KEYS = 40, 25


async def seed(store: Store, retention: timedelta) -> int:
    """TASKS scopes of KEYS keys that expire, each beside one that never does; returns how many
    events compaction removes once they have expired."""
    for task in range(TASKS):
        ts = store.task_store("dag", "run", f"t{task}")
        await ts.set_many({f"k{i}": i for i in range(KEYS)}, retention=retention)
        await ts.set("job_id", task, retention=NEVER_EXPIRE)
    return TASKS * KEYS


async def assert_live_values_kept(store: Store) -> None:
    assert (await store.verify()).ok
    for task in range(TASKS):
        ts = store.task_store("dag", "run", f"t{task}")
        assert await ts.items() == {"job_id": task}


class Compactor:
    """tests/compactor.py in a process of its own."""

    def __init__(self, command: str, url: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(COMPACTOR), command, url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def expect(self, line: str) -> None:
        assert self.process.stdout is not None
        got = self.process.stdout.readline().strip()
        if got != line:
            self.process.kill()
            _, err = self.process.communicate(timeout=30)
            raise AssertionError(f"expected {line!r} from the compactor, got {got!r}:\n{err}")

    def send(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("\n")
        self.process.stdin.flush()

    def outcome(self) -> dict[str, object]:
        out, err = self.process.communicate(timeout=120)
        assert self.process.returncode == 0, err
        answer: dict[str, object] = json.loads(out.strip().splitlines()[-1])
        return answer

    def finish(self) -> None:
        _, err = self.process.communicate(timeout=60)
        assert self.process.returncode == 0, err


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'trail.db'}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with postgres_schema_url() as url:
        yield url


async def test_sqlite_compaction_is_refused_while_another_process_compacts(
    sqlite_url: str, clock: FakeClock
) -> None:
    async with open_store(sqlite_url, clock=clock) as store:
        expired = await seed(store, timedelta(hours=1))
        clock.advance(timedelta(hours=2))
        other = Compactor("hold", sqlite_url)
        await anyio.to_thread.run_sync(other.expect, "held")
        try:
            with pytest.raises(CompactionRunningError, match="another compaction of SQLite"):
                await store.compact()
            dry = await store.compact(dry_run=True)  # a dry run changes nothing: no lock
        finally:
            other.send()
            await anyio.to_thread.run_sync(other.finish)

        assert dry.events_removed == expired
        assert len([row async for row in store.backend.select_all_events()]) == TASKS * (KEYS + 1)
        report = await store.compact()
        assert report.events_removed == expired
        await assert_live_values_kept(store)


@pytest.mark.slow
def test_two_sqlite_processes_compacting_at_once_do_the_work_once(sqlite_url: str) -> None:
    async def prepare() -> int:
        async with open_store(sqlite_url) as store:
            expired = await seed(store, timedelta(milliseconds=1))
        await anyio.sleep(0.01)
        return expired

    expired = anyio.run(prepare)
    compactors = [Compactor("compact", sqlite_url) for _ in range(2)]
    for compactor in compactors:
        compactor.expect("ready")
    for compactor in compactors:
        compactor.send()
    outcomes = [compactor.outcome() for compactor in compactors]

    removed = sorted(int(o.get("events_removed", 0)) for o in outcomes)  # type: ignore[call-overload]
    # Either one was refused while the other ran, or they ran one after the other and the
    # second found nothing left: never both removing, never anything removed twice.
    assert removed == [0, expired]
    assert all("events_removed" in o or "another compaction" in str(o["running"]) for o in outcomes)

    async def check() -> None:
        async with open_store(sqlite_url) as store:
            await assert_live_values_kept(store)

    anyio.run(check)


async def test_postgres_compaction_is_refused_while_another_replica_compacts(
    postgres_url: str, clock: FakeClock
) -> None:
    async with (
        open_store(postgres_url, clock=clock) as store,
        open_store(postgres_url, clock=clock) as replica,
    ):
        expired = await seed(store, timedelta(hours=1))
        clock.advance(timedelta(hours=2))
        async with replica.backend.compaction_lock():
            with pytest.raises(CompactionRunningError, match="another compaction of PostgreSQL"):
                await store.compact()
        report = await store.compact()

        assert report.events_removed == expired
        await assert_live_values_kept(replica)


async def test_postgres_compaction_locks_of_other_schemas_do_not_collide(
    postgres_url: str, clock: FakeClock
) -> None:
    with postgres_schema_url() as elsewhere:
        async with (
            open_store(postgres_url, clock=clock) as store,
            open_store(elsewhere, clock=clock) as other,
        ):
            await seed(store, timedelta(hours=1))
            clock.advance(timedelta(hours=2))
            async with other.backend.compaction_lock():
                report = await store.compact()

    assert report.events_removed == TASKS * KEYS


async def test_two_postgres_replicas_compacting_at_once_do_the_work_once(
    postgres_url: str, clock: FakeClock
) -> None:
    async with (
        open_store(postgres_url, clock=clock) as store,
        open_store(postgres_url, clock=clock) as replica,
    ):
        expired = await seed(store, timedelta(hours=1))
        clock.advance(timedelta(hours=2))
        outcomes: list[CompactionReport | CompactionRunningError] = []

        async def run(one: Store) -> None:
            try:
                outcomes.append(await one.compact())
            except CompactionRunningError as error:
                outcomes.append(error)

        async with anyio.create_task_group() as tg:
            tg.start_soon(run, store)
            tg.start_soon(run, replica)

        removed = sorted(
            o.events_removed if isinstance(o, CompactionReport) else 0 for o in outcomes
        )
        assert removed == [0, expired]
        await assert_live_values_kept(store)


async def test_a_second_compaction_on_one_memory_backend_is_refused(clock: FakeClock) -> None:
    async with open_store("memory://", clock=clock) as store:
        await seed(store, timedelta(hours=1))
        clock.advance(timedelta(hours=2))
        async with store.backend.compaction_lock():
            with pytest.raises(CompactionRunningError, match="another compaction"):
                await store.compact()
        assert (await store.compact()).events_removed == TASKS * KEYS
