"""The PostgreSQL write transaction's round trips: what a batch reads at its start, it does not
ask again, and what it reads is what the table holds."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
import asyncpg
import pytest
from conftest import FakeClock, postgres_schema_url

from eventstore import StoreConfig, open_store
from eventstore.log.backends.base import WriteTransaction
from eventstore.log.backends.postgres.backend import PostgresBackend, split_url
from eventstore.log.backends.postgres.heads import RELEASE, TAKE_AND_CHECK
from eventstore.log.backends.postgres.statements import APPLY
from eventstore.log.backends.postgres.transaction import PostgresTransaction
from eventstore.log.backends.rows import CurrentRow, EventRow, Insert, LogHead
from eventstore.log.envelope import is_sensitive
from eventstore.log.errors import StorageError
from eventstore.log.scopes import TaskScope, scope_key


@pytest.fixture
def pg_url() -> Iterator[str]:
    with postgres_schema_url() as url:
        yield url


@pytest.fixture
async def backend(pg_url: str, clock: FakeClock) -> AsyncIterator[PostgresBackend]:
    """The backend of a store where task t0 holds one key, t1 a sensitive one, t2 forty keys
    (the sensitive one sorting last) and t3 none yet."""
    async with open_store(pg_url, clock=clock) as store:
        await store.task_store("d", "r", "t0").set("k", 1)
        await store.task_store("d", "r", "t1").set("pw", "secret", sensitive=True)
        many = store.task_store("d", "r", "t2")
        await many.set_many({f"k{i:02}": i for i in range(40)})
        await many.set("zz", "secret", sensitive=True)
    opened = await PostgresBackend.connect(pg_url, StoreConfig())
    try:
        yield opened
    finally:
        await opened.aclose()


def _pg(tx: WriteTransaction) -> PostgresTransaction:
    assert isinstance(tx, PostgresTransaction)
    return tx


def _pg_writer(backend: PostgresBackend) -> Any:
    """The connection the backend writes on (kept from one write transaction to the next)."""
    conn = backend._writer
    assert conn is not None
    return conn


def _keys(*tasks: str) -> list[str]:
    return [scope_key(TaskScope("d", "r", task)) for task in tasks]


@asynccontextmanager
async def _statements(conn: Any) -> AsyncIterator[list[str]]:
    """The statements `conn` runs inside the block."""
    seen: list[str] = []

    def log(record: Any) -> None:
        seen.append(record.query)

    conn.add_query_logger(log)
    try:
        yield seen
    finally:
        await anyio.lowlevel.checkpoint()  # the driver calls loggers soon after, not at once
        conn.remove_query_logger(log)


async def _heads(tx: WriteTransaction, scope_id: int, keys: list[str]) -> dict[str, bytes]:
    """The value heads of these keys of one scope, by key."""
    heads = await tx.select_current_heads([(scope_id, key) for key in keys])
    return {key: head for (_, key), head in heads.items()}


async def test_small_scopes_answer_value_heads_from_the_batchs_first_read(
    backend: PostgresBackend,
) -> None:
    for _ in range(2):  # the second time, the driver knows the statements and their types
        async with backend.write() as tx, _statements(_pg(tx).conn) as seen:
            _, scopes = await tx.select_head_and_scopes(_keys("t0", "t1", "t3"))
            t0, t1 = scopes[_keys("t0")[0]].scope_id, scopes[_keys("t1")[0]].scope_id
            plain = await _heads(tx, t0, ["k", "absent"])
            flagged = await _heads(tx, t1, ["pw"])
    assert len(seen) == 1, seen
    assert {k: is_sensitive(h) for k, h in plain.items()} == {"k": False}
    assert {k: is_sensitive(h) for k, h in flagged.items()} == {"pw": True}
    assert _keys("t3")[0] not in scopes


async def test_a_scope_with_many_keys_is_asked_when_planning_needs_it(
    backend: PostgresBackend,
) -> None:
    async with backend.write() as tx:
        _, scopes = await tx.select_head_and_scopes(_keys("t2"))
        async with _statements(_pg(tx).conn) as seen:
            heads = await _heads(tx, scopes[_keys("t2")[0]].scope_id, ["zz", "k00"])
    assert len([s for s in seen if "FROM current" in s]) == 1, seen
    assert {k: is_sensitive(h) for k, h in heads.items()} == {"zz": True, "k00": False}


async def test_the_heads_of_a_whole_batch_take_at_most_one_statement(
    backend: PostgresBackend,
) -> None:
    async with backend.write() as tx:
        _, scopes = await tx.select_head_and_scopes(_keys("t0", "t1", "t2"))
        t0, t1, t2 = (scopes[key].scope_id for key in _keys("t0", "t1", "t2"))
        async with _statements(_pg(tx).conn) as seen:
            heads = await _pg(tx).select_current_heads(
                [(t0, "k"), (t1, "pw"), (t2, "zz"), (t2, "k01"), (t2, "absent")]
            )
    assert len([s for s in seen if "FROM current" in s]) == 1, seen
    assert {pair: is_sensitive(head) for pair, head in heads.items()} == {
        (t0, "k"): False,
        (t1, "pw"): True,
        (t2, "zz"): True,
        (t2, "k01"): False,
    }


async def test_value_heads_after_a_write_in_the_batch_are_the_tables(
    backend: PostgresBackend,
) -> None:
    seen: dict[str, dict[str, bytes]] = {}

    async def batch() -> None:
        async with backend.write() as tx:
            _, scopes = await tx.select_head_and_scopes(_keys("t1"))
            scope_id = scopes[_keys("t1")[0]].scope_id
            head, _ = await tx.select_head_and_scopes()
            row = CurrentRow(scope_id, "pw", b"\x00plain", None, 2, head.last_seq + 1, 0)
            await tx.insert(Insert(current=[row]))
            seen["upserted"] = await _heads(tx, scope_id, ["pw"])
            await tx.delete_current(scope_ids=[scope_id])
            seen["cleared"] = await _heads(tx, scope_id, ["pw"])
            raise _RolledBack  # the batch leaves nothing behind

    with pytest.raises(_RolledBack):
        await batch()
    assert seen == {"upserted": {"pw": b"\x00p"}, "cleared": {}}


class _RolledBack(Exception):
    pass


async def test_a_batch_after_this_writers_own_commit_reads_no_heads(
    backend: PostgresBackend,
) -> None:
    keys = _keys("t0", "t1", "t3")
    async with backend.write() as tx:  # a new writer knows nothing yet: it reads, and keeps
        head, scopes = await tx.select_head_and_scopes(keys)
        await tx.insert(Insert(head=LogHead(head.last_seq, head.last_recorded_at + 1)))
    async with _statements(_pg_writer(backend)) as seen, backend.write() as tx:
        head, scopes = await tx.select_head_and_scopes(keys)
        t1 = scopes[keys[1]].scope_id
        flagged = await _heads(tx, t1, ["pw", "absent"])
    assert seen == [TAKE_AND_CHECK, RELEASE]
    assert {k: is_sensitive(h) for k, h in flagged.items()} == {"pw": True}
    assert (head.last_seq, sorted(scopes)) == (43, sorted(keys[:2]))


async def test_after_another_writer_commits_the_heads_are_read_again(
    backend: PostgresBackend, pg_url: str, clock: FakeClock
) -> None:
    keys = _keys("t0")
    async with backend.write() as tx:
        head, before = await tx.select_head_and_scopes(keys)
        await tx.insert(Insert(head=LogHead(head.last_seq, head.last_recorded_at + 1)))
    async with open_store(pg_url, clock=clock) as other:
        await other.task_store("d", "r", "t0").set("k", "theirs", sensitive=True)
    async with _statements(_pg_writer(backend)) as seen, backend.write() as tx:
        head, after = await tx.select_head_and_scopes(keys)
        heads = await _heads(tx, after[keys[0]].scope_id, ["k"])
    assert len(seen) == 3, seen  # the lease and the check, the heads, the lease given up
    assert after[keys[0]].version == before[keys[0]].version + 1
    assert head.last_seq == 44
    assert {k: is_sensitive(h) for k, h in heads.items()} == {"k": True}


async def test_a_batch_that_does_not_commit_leaves_nothing_kept(
    backend: PostgresBackend,
) -> None:
    keys = _keys("t0")

    async def batch() -> None:
        async with backend.write() as tx:
            head, scopes = await tx.select_head_and_scopes(keys)
            row = scopes[keys[0]]
            row.version += 5
            await tx.insert(Insert(scopes=[row]))
            await tx.insert(Insert(head=LogHead(head.last_seq + 5, head.last_recorded_at)))
            raise _RolledBack

    with pytest.raises(_RolledBack):
        await batch()
    async with backend.write() as tx:
        head, scopes = await tx.select_head_and_scopes(keys)
    assert (head.last_seq, scopes[keys[0]].version) == (43, 1)


async def test_writes_of_two_stores_taking_turns_get_every_version_once(
    pg_url: str, clock: FakeClock
) -> None:
    async with open_store(pg_url, clock=clock) as one, open_store(pg_url, clock=clock) as two:
        results = []
        for i in range(6):
            store = (one, two)[i % 2]
            ts = store.task_store("d", "r", "shared", try_number=1 + i // 2)
            results.append(await ts.set("k", i))
        assert [r.version for r in results] == [1, 2, 3, 4, 5, 6]
        assert [r.seq for r in results] == [1, 2, 3, 4, 5, 6]
        h = one.history(one.task_store("d", "r", "shared").scope)
        assert [e.seq for e in await h.events(try_number=2)] == [3, 4]
        assert (await one.verify()).ok


async def _lease_waiters(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        found: int = await conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
            "AND classid = 1953655927"
        )
        return found
    finally:
        await conn.close()


async def test_a_writer_cancelled_while_it_waits_for_the_lease_leaves_it_free(
    backend: PostgresBackend, pg_url: str
) -> None:
    dsn, _ = split_url(pg_url)
    other = await PostgresBackend.connect(pg_url, StoreConfig())
    try:
        async with backend.write() as tx, anyio.create_task_group() as tg:
            head, _ = await tx.select_head_and_scopes()

            async def wait_for_the_lease() -> None:
                async with other.write():
                    raise AssertionError("the lease is held by the first writer")

            tg.start_soon(wait_for_the_lease)
            # Only the server knows when the other writer waits: ask it until it does.
            while not await _lease_waiters(dsn):  # noqa: ASYNC110
                await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
            await tx.insert(Insert(head=LogHead(head.last_seq, head.last_recorded_at + 1)))
        start = head.last_recorded_at
        for writer in (other, backend, other):  # each sees the commit of the one before
            async with writer.write() as tx:
                head, _ = await tx.select_head_and_scopes()
                await tx.insert(Insert(head=LogHead(head.last_seq, head.last_recorded_at + 1)))
        async with backend.write() as tx:
            head, _ = await tx.select_head_and_scopes()
        assert head.last_recorded_at == start + 4
    finally:
        await other.aclose()
    assert await _lease_waiters(dsn) == 0


async def test_a_writer_whose_connection_was_lost_takes_the_lease_on_a_new_one(
    backend: PostgresBackend,
) -> None:
    keys = _keys("t0")
    async with backend.write() as tx:
        head, _ = await tx.select_head_and_scopes(keys)
    lost = _pg_writer(backend)
    with pytest.raises(StorageError):  # the batch whose connection is lost fails, and says so
        async with backend.write() as tx:
            await _pg(tx).conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
    # The next one gets a connection of its own, takes the lease there and writes.
    async with backend.write() as tx:
        moved, _ = await tx.select_head_and_scopes(keys)
        await tx.insert(Insert(head=LogHead(moved.last_seq + 1, moved.last_recorded_at + 1)))
    async with backend.write() as tx:
        after, _ = await tx.select_head_and_scopes(keys)
    assert _pg_writer(backend) is not lost
    assert (after.last_seq, after.last_recorded_at) == (
        head.last_seq + 1,
        head.last_recorded_at + 1,
    )


async def test_a_usual_batch_after_this_writers_own_commit_is_two_round_trips(
    backend: PostgresBackend,
) -> None:
    keys = _keys("t0")
    async with backend.write() as tx:  # a new writer knows nothing yet: it reads, and keeps
        head, scopes = await tx.select_head_and_scopes(keys)
        await tx.insert(Insert(head=LogHead(head.last_seq, head.last_recorded_at + 1)))
    async with _statements(_pg_writer(backend)) as seen, backend.write() as tx:
        head, scopes = await tx.select_head_and_scopes(keys)
        row = scopes[keys[0]]
        row.version += 1
        seq, now = head.last_seq + 1, head.last_recorded_at + 1
        event = EventRow(seq, row.scope_id, row.version, "set", "k", None, now, None, "a", b"{}")
        current = CurrentRow(row.scope_id, "k", b"\x00\x002", None, row.version, seq, now)
        await tx.insert(
            Insert(events=[event], current=[current], scopes=[row], head=LogHead(seq, now))
        )
    # The lease and the check; then every write, the commit and the lease given up.
    assert seen == [TAKE_AND_CHECK, APPLY]
    async with backend.write() as tx:
        head, scopes = await tx.select_head_and_scopes(keys)
        heads = await _heads(tx, row.scope_id, ["k"])
    assert (head.last_seq, scopes[keys[0]].version, heads) == (seq, row.version, {"k": b"\x00\x00"})
