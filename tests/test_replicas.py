"""Two `tasktrail serve` replicas on one PostgreSQL database, written through at once.

Each replica is a process of its own (`python -m eventstore serve`) with its own store, pool and
group-commit writer, on one fresh schema. Clients write to the same task instances through both
replicas, alternating between them (every other write conditional on the version read through
the other replica), while the tries of those instances advance: try 2 starts while try 1 is
still writing, try 3 while try 2 is. Some acknowledged writes are sent again, with the same
idempotency id, through the other replica. A reader tails the log all along.

Afterwards the log must show what replicas promise: every acknowledged write is in history with
its value, version and position, and nothing else is, and the other replica reads it at once;
versions per task instance run 1..N; no event of a lower try follows one of a higher try, and a
stale try's write sent after the client saw the newer try acknowledged was refused (410,
StaleAttemptError); a conditional write was acknowledged only at the version it expected; a
write sent again through the other replica got the first answer; verify() is ok; the tailer saw
every position once, in order; recorded_at never went backwards.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import aiohttp
import anyio
import pytest
from conftest import postgres_schema_url
from tailing import Tailer, assert_tailer_saw_everything_once

from eventstore import ConcurrencyError, StaleAttemptError, TaskScope, open_store
from eventstore.client import Remote, RemoteTaskStore, connect
from eventstore.log.requests import AppendResult
from eventstore.log.scopes import scope_key
from eventstore.service.auth import make_token

pytestmark = pytest.mark.slow

SECRET = "replica-test-secret-0123456789"
DAG, RUN, TASK = "etl", "run_1", "load"
MAP_INDICES = (0, 1, 2)  # the task instances every try of every client writes to
TRIES = (1, 2, 3)
CLIENTS_PER_TRY = 2
NEXT_TRY_AFTER = 12  # acknowledged writes of a try before the next try starts
STALE_REFUSALS = 4  # a superseded try's client stops after this many 410s
LAST_TRY_WRITES = 15  # writes of each client of the last try
MAX_ATTEMPTS = 400  # a bound on any client's loop, so a broken fence fails instead of hanging


@pytest.fixture
def pg_url() -> Iterator[str]:
    with postgres_schema_url() as url:
        yield url


# --- the replicas ------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def replicas(db: str, count: int, log: Path) -> AsyncIterator[list[str]]:
    """`count` `tasktrail serve` processes on free loopback ports for the block; their URLs.

    They are started together, so they open (create, migrate) the fresh schema at once. A port
    is picked before the process binds it, so another process may take it first: such a replica
    exits, and is started again on another port.
    """
    env = {**os.environ, "TASKTRAIL_SECRET": SECRET}
    servers: list[asyncio.subprocess.Process] = []

    async def start() -> tuple[asyncio.subprocess.Process, str]:
        port = _free_port()
        with log.open("ab") as out:
            server = await asyncio.create_subprocess_exec(
                *[sys.executable, "-m", "eventstore", "serve", "--db", db, "--port", str(port)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=out,
            )
        servers.append(server)
        return server, f"http://127.0.0.1:{port}"

    try:
        started = [await start() for _ in range(count)]
        urls = []
        for server, url in started:
            for _ in range(3):
                if await _healthy(url, server):
                    break
                server, url = await start()
            else:
                raise AssertionError(f"a replica failed to start 3 times; see its log in {log}")
            urls.append(url)
        yield urls
    finally:
        with anyio.CancelScope(shield=True):
            for server in servers:
                await _stop(server)


async def _healthy(url: str, server: asyncio.subprocess.Process) -> bool:
    """Wait until the replica answers /healthz (True) or exits (False)."""
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if server.returncode is not None:
                return False
            try:
                async with session.get(f"{url}/healthz") as response:
                    if response.status == 200:
                        return True
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError(f"the replica at {url} did not become healthy within 60 s")


async def _stop(server: asyncio.subprocess.Process) -> None:
    if server.returncode is None:
        server.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(server.wait(), 30)
        except TimeoutError:
            server.kill()
            await server.wait()


# --- the clients -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ack:
    map_index: int
    try_number: int
    key: str
    value: dict[str, int]
    result: AppendResult


@dataclass
class Instance:
    """What the clients of one task instance know of each other as they run."""

    map_index: int
    go: dict[int, asyncio.Event] = field(default_factory=dict)  # try -> may start
    first_ack: dict[int, float] = field(default_factory=dict)  # try -> when first acknowledged
    acks: dict[int, int] = field(default_factory=lambda: defaultdict(int))

    def newer_try_acknowledged(self, try_number: int) -> bool:
        return any(t > try_number for t in self.first_ack)


@dataclass
class Outcome:
    acks: list[Ack] = field(default_factory=list)
    stale: dict[tuple[int, int], int] = field(default_factory=lambda: defaultdict(int))
    resent: int = 0
    conflicts: int = 0
    # Writes acknowledged against what the client knew when it sent them, or answered
    # differently when sent again.
    violations: list[str] = field(default_factory=list)


def task_token(map_index: int, try_number: int) -> str:
    return make_token(
        SECRET.encode(),
        "task",
        ttl=timedelta(hours=1),
        dag=DAG,
        run=RUN,
        task=TASK,
        map_index=map_index,
        try_number=try_number,
    )


async def client(
    remotes: list[Remote], instance: Instance, try_number: int, number: int, outcome: Outcome
) -> None:
    """One client of one try: writes alternate between the replicas until the try is done."""
    await instance.go[try_number].wait()
    stores = [
        r.task_store(DAG, RUN, TASK, instance.map_index, try_number=try_number) for r in remotes
    ]
    last = try_number == TRIES[-1]
    written = 0
    for attempt in range(MAX_ATTEMPTS):
        through = (attempt + number) % len(stores)
        key = f"k{attempt % 5}"
        value = {"try": try_number, "client": number, "attempt": attempt}
        idempotency_id = uuid.uuid4().hex
        # Every other write is conditional, on the version read through the other replica.
        expected = await stores[1 - through].version() if attempt % 2 else None
        fenced_when_sent = instance.newer_try_acknowledged(try_number)
        try:
            result = await stores[through].set(
                key, value, idempotency_id=idempotency_id, expected_version=expected
            )
        except ConcurrencyError as error:
            if expected is None or error.actual_version <= expected:
                outcome.violations.append(f"a conflict with no newer version: {error}")
            outcome.conflicts += 1
            continue
        except StaleAttemptError as error:
            if (error.try_number, error.latest_try <= try_number) != (try_number, False):
                outcome.violations.append(f"try {try_number} refused as {error}")
            outcome.stale[(instance.map_index, try_number)] += 1
            if outcome.stale[(instance.map_index, try_number)] >= STALE_REFUSALS:
                return
            continue
        if expected is not None and result.version != expected + 1:
            outcome.violations.append(f"expected version {expected} acknowledged as {result}")
        if fenced_when_sent:
            outcome.violations.append(
                f"try {try_number} of map index {instance.map_index} was acknowledged "
                f"(seq {result.seq}) after a newer try's write was"
            )
        outcome.acks.append(Ack(instance.map_index, try_number, key, value, result))
        instance.first_ack.setdefault(try_number, time.monotonic())
        instance.acks[try_number] += 1
        if instance.acks[try_number] == NEXT_TRY_AFTER and try_number + 1 in instance.go:
            instance.go[try_number + 1].set()
        written += 1
        if attempt % 4 == 0:
            await _send_again(stores[1 - through], key, value, idempotency_id, result, outcome)
        if last and written == LAST_TRY_WRITES:
            return
    outcome.violations.append(f"a client of try {try_number} never finished")


async def _send_again(
    ts: RemoteTaskStore,
    key: str,
    value: dict[str, int],
    idempotency_id: str,
    first: AppendResult,
    outcome: Outcome,
) -> None:
    """The same write through the other replica: answered as the first time, recorded once.

    And the other replica reads what the first acknowledged: no replica answers from a stale copy.
    """
    again = await ts.set(key, value, idempotency_id=idempotency_id)
    if again != first:
        outcome.violations.append(f"sent again, {idempotency_id} got {again}, first {first}")
    outcome.resent += 1
    if (seen := await ts.version()) < first.version:
        outcome.violations.append(f"read version {seen} after version {first.version} was acked")


# --- the test ----------------------------------------------------------------------------------


async def test_two_replicas_keep_every_guarantee_under_concurrent_tries(
    pg_url: str, tmp_path: Path
) -> None:
    instances = {m: Instance(m) for m in MAP_INDICES}
    for instance in instances.values():
        instance.go = {t: asyncio.Event() for t in TRIES}
        instance.go[TRIES[0]].set()
    outcome = Outcome()
    log_file = tmp_path / "replicas.log"

    with anyio.fail_after(120):
        async with AsyncExitStack() as stack:
            # Both replicas start together on the fresh schema: they create and migrate it once.
            urls = await stack.enter_async_context(replicas(pg_url, 2, log_file))
            store = await stack.enter_async_context(open_store(pg_url))
            remotes: dict[tuple[int, int], list[Remote]] = {}
            for m, t in itertools.product(MAP_INDICES, TRIES):
                token = task_token(m, t)
                remotes[(m, t)] = [
                    await stack.enter_async_context(connect(url, token=token)) for url in urls
                ]
            tailer = Tailer(store.backend, pause=0.005)
            finished = anyio.Event()
            async with anyio.create_task_group() as tg:
                tg.start_soon(tailer, finished)
                async with anyio.create_task_group() as clients:
                    for m, t, c in itertools.product(MAP_INDICES, TRIES, range(CLIENTS_PER_TRY)):
                        clients.start_soon(client, remotes[(m, t)], instances[m], t, c, outcome)
                finished.set()
            await tailer.catch_up()
            log = [row async for row in store.backend.select_all_events()]
            history = {
                m: await store.history(TaskScope(DAG, RUN, TASK, m)).events() for m in MAP_INDICES
            }
            heads = {
                m: await store.backend.select_scope(scope_key(TaskScope(DAG, RUN, TASK, m)))
                for m in MAP_INDICES
            }
            report = await store.verify()

    assert not outcome.violations, outcome.violations
    assert report.ok, report.mismatches

    # Every try of every instance wrote, and every superseded try was fenced.
    for m, t in itertools.product(MAP_INDICES, TRIES):
        assert instances[m].acks[t] >= NEXT_TRY_AFTER, (m, t)
        if t != TRIES[-1]:
            assert outcome.stale[(m, t)] >= STALE_REFUSALS, f"try {t} of {m} was never fenced"
    assert outcome.resent > 0

    # Every acknowledged write is in history, with its value, version, try and position; nothing
    # else is (refused writes left no trace; writes sent again were recorded once).
    acked = {ack.result.seq: ack for ack in outcome.acks}
    assert len(acked) == len(outcome.acks), "two acknowledged writes share a position"
    for m, events in history.items():
        for event in events:
            ack = acked.pop(event.seq, None)
            assert ack is not None, f"an event no client had acknowledged: {event}"
            assert (ack.map_index, ack.try_number) == (m, event.try_number)
            assert (event.kind, event.key, event.value) == ("set", ack.key, ack.value)
            assert (event.version, event.seq) == (ack.result.version, ack.result.seq)
        # Versions run 1..N without gaps, and the tries never go back.
        assert [e.version for e in events] == list(range(1, len(events) + 1)), m
        tries = [e.try_number or 0 for e in events]
        assert tries == sorted(tries), f"a lower try wrote after a higher one at map index {m}"
        head = heads[m]
        assert head is not None
        assert (head.version, head.max_try) == (len(events), TRIES[-1])
    assert not acked, f"acknowledged writes missing from history: {list(acked.values())[:5]}"

    # The tailer saw every position once, in order, and the same events the log holds.
    assert_tailer_saw_everything_once(tailer, log)
    recorded = [row.recorded_at for row in log]
    assert recorded == sorted(recorded), "recorded_at went backwards between replicas' writes"
    assert len(log) == len(outcome.acks)
