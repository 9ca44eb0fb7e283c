"""eventstore.client against a real service: the accessor API, its errors, its safe retries."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from eventstore import NEVER_EXPIRE, ConcurrencyError, StaleAttemptError, TaskScope
from eventstore.client import (
    AuthenticationError,
    PermissionDeniedError,
    ServiceUnavailableError,
    connect,
    connect_blocking,
    new_idempotency_id,
)
from eventstore.log.errors import (
    NoneValueError,
    NonFiniteValueError,
    RetentionTypeError,
    ValueTooLargeError,
    ValueTypeError,
)
from eventstore.service import create_app, serve_in_thread
from service.service_helpers import SECRET, FakeClock, Service, task_path


async def test_task_store_round_trip(service: Service, dag: str) -> None:
    async with connect(service.base_url, token=service.task_token(dag, try_number=1)) as remote:
        ts = remote.task_store(dag, "r", "t", try_number=1)
        assert await ts.get("job_id") is None
        assert await ts.get("job_id", default="none") == "none"
        result = await ts.set("job_id", "spark-123", retention=NEVER_EXPIRE)
        assert result.version == 1
        assert await ts.get("job_id") == "spark-123"
        await ts.set_many({"offset": 1200, "progress": {"rows": 5}}, retention=timedelta(hours=1))
        assert await ts.items() == {
            "job_id": "spark-123",
            "offset": 1200,
            "progress": {"rows": 5},
        }
        await ts.patch("offset", 1300)
        assert await ts.get("offset") == 1300
        assert (await ts.delete("offset")).events == 1
        assert (await ts.delete("offset")).events == 0
        assert await ts.version() == 5
        await ts.clear()
        assert await ts.items() == {}


async def test_airflow_style_aliases(service: Service, dag: str) -> None:
    async with connect(service.base_url, token=service.task_token(dag)) as remote:
        ts = remote.task_store(dag, "r", "t")
        await ts.aset("k", [1, 2])
        assert await ts.aget("k") == [1, 2]
        await ts.adelete("k")
        assert await ts.aget("k", "gone") == "gone"
        await ts.aset("k", 1)
        await ts.aclear()
        assert await ts.items() == {}


@pytest.mark.parametrize("key", ["a/b", "a//b", "/a", "a/b/", "..", "%2F", "sp ace?&#"])
async def test_client_keys_with_slashes(service: Service, dag: str, key: str) -> None:
    async with connect(service.base_url, token=service.task_token(dag)) as remote:
        ts = remote.task_store(dag, "r", "t")
        await ts.set(key, key)
        assert await ts.get(key) == key
        assert await ts.items() == {key: key}


async def test_run_ids_with_colons_and_plus(service: Service, dag: str) -> None:
    run = "manual__2026-01-01T00:00:00+00:00"
    async with connect(service.base_url, token=service.task_token(dag, run=run)) as remote:
        ts = remote.task_store(dag, run, "t")
        await ts.set("k", 1)
        assert await ts.get("k") == 1


async def test_items_pages_through_more_than_one_page(service: Service, dag: str) -> None:
    async with connect(service.base_url, token=service.task_token(dag)) as remote:
        ts = remote.task_store(dag, "r", "t")
        values = {f"k{n:04d}": n for n in range(1500)}
        await ts.set_many(values)
        assert await ts.items() == values


async def test_asset_stores_by_name_and_uri(service: Service, dag: str) -> None:
    async with connect(service.base_url, token=service.token("admin")) as remote:
        by_name = remote.asset_store(name=f"{dag}.orders")
        by_uri = remote.asset_store(uri=f"s3://bucket/{dag}/orders")
        both = remote.asset_store(name=f"{dag}.orders", uri=f"s3://bucket/{dag}/orders")
        await by_name.set("watermark", 1)
        await by_uri.set("watermark", 2)
        await both.set_many({"watermark": 3})
        assert [await s.get("watermark") for s in (by_name, by_uri, both)] == [1, 2, 3]
        await both.clear()
        assert await both.items() == {}
        assert await by_name.items() == {"watermark": 1}


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (None, NoneValueError),
        (float("nan"), NonFiniteValueError),
        ({"a": [float("inf")]}, NonFiniteValueError),
        ({1, 2}, ValueTypeError),
    ],
)
async def test_bad_values_raise_the_stores_errors_and_send_nothing(
    service: Service, dag: str, value: object, error: type[Exception]
) -> None:
    async with connect(service.base_url, token=service.task_token(dag)) as remote:
        ts = remote.task_store(dag, "r", "t")
        with pytest.raises(error, match="value for key 'k'"):
            await ts.set("k", value)
        assert await ts.version() == 0


async def test_retention_must_be_a_timedelta(service: Service, dag: str) -> None:
    async with connect(service.base_url, token=service.task_token(dag)) as remote:
        with pytest.raises(RetentionTypeError, match="retention takes a timedelta"):
            await remote.task_store(dag, "r", "t").set("k", 1, retention=30)  # type: ignore[arg-type]


async def test_server_side_errors_come_back_as_store_exceptions(service: Service, dag: str) -> None:
    async with connect(service.base_url, token=service.task_token(dag, try_number=2)) as remote:
        ts = remote.task_store(dag, "r", "t")
        await ts.set("k", 1)
        with pytest.raises(ConcurrencyError, match="expected 0") as conflict:
            await ts.set("k", 2, expected_version=0)
        assert conflict.value.actual_version == 1
        assert conflict.value.scope == ts.scope
        with pytest.raises(ValueTooLargeError, match="over the limit of 65535") as big:
            await ts.set("k", "x" * 70_000)
        assert big.value.limit == 65_535
    async with connect(service.base_url, token=service.task_token(dag, try_number=1)) as zombie:
        with pytest.raises(StaleAttemptError, match=r"try 1 .* cannot write") as stale:
            await zombie.task_store(dag, "r", "t").set("k", 0)
        assert stale.value.latest_try == 2


async def test_auth_errors(service: Service, dag: str) -> None:
    async with connect(service.base_url, token="garbage") as remote:
        with pytest.raises(AuthenticationError, match="401 bad_token"):
            await remote.task_store(dag, "r", "t").get("k")
    async with connect(service.base_url, token=service.task_token("another")) as remote:
        with pytest.raises(PermissionDeniedError, match="403 forbidden"):
            await remote.task_store(dag, "r", "t").set("k", 1)


def test_blocking_client(service: Service, dag: str) -> None:
    with connect_blocking(service.base_url, token=service.task_token(dag)) as remote:
        ts = remote.task_store(dag, "r", "t")
        ts.set("k", {"rows": 1})
        ts.set_many({"a": 1, "b": 2})
        ts.patch("a", 3)
        assert ts.get("k") == {"rows": 1}
        assert ts.items() == {"a": 3, "b": 2, "k": {"rows": 1}}
        ts.delete("k")
        ts.clear()
        assert ts.items() == {}
        assert ts.version() == 6
        assets = remote.asset_store(name=dag)
        assets.set("w", 1)
        assert assets.get("w") == 1


# ----------------------------------------------------------------------------- retries


class DroppingProxy:
    """A TCP proxy to the service that can throw away responses: the request reaches the
    service and is committed, but the client only sees its connection die."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.drop = 0
        self.dropped = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)

        async def upstream() -> None:
            while data := await reader.read(65536):
                up_writer.write(data)
                await up_writer.drain()
            up_writer.close()

        async def downstream() -> None:
            while data := await up_reader.read(65536):
                if self.drop:
                    self.drop -= 1
                    self.dropped += 1
                    writer.transport.abort()
                    up_writer.close()
                    return
                writer.write(data)
                await writer.drain()
            writer.close()

        await asyncio.gather(upstream(), downstream(), return_exceptions=True)

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture
async def proxy(service: Service) -> AsyncIterator[DroppingProxy]:
    p = DroppingProxy(service.host, service.port)
    p.url = await p.start()  # type: ignore[attr-defined]
    yield p
    await p.close()


async def test_write_whose_response_is_lost_is_retried_and_recorded_once(
    service: Service, dag: str, proxy: DroppingProxy
) -> None:
    url: str = proxy.url  # type: ignore[attr-defined]
    async with connect(url, token=service.task_token(dag), backoff=0.001) as remote:
        ts = remote.task_store(dag, "r", "t")
        await ts.set("before", 0)
        proxy.drop = 1
        result = await ts.set_many({"offset": 1200, "progress": {"rows": 5}})
        assert proxy.dropped == 1
        assert result.version == 3  # one version per key
        assert result.events == 2
        assert await ts.version() == 3
        assert await ts.items() == {"before": 0, "offset": 1200, "progress": {"rows": 5}}


async def test_retries_are_bounded(service: Service, dag: str, proxy: DroppingProxy) -> None:
    url: str = proxy.url  # type: ignore[attr-defined]
    async with connect(url, token=service.task_token(dag), retries=2, backoff=0.001) as remote:
        ts = remote.task_store(dag, "r", "t")
        await ts.version()
        proxy.drop = 100
        with pytest.raises(ServiceUnavailableError, match="after 3 attempts"):
            await ts.set("k", 1)
        # Three attempts; aiohttp itself resends an idempotent method once when a kept-alive
        # connection dies, so each attempt may reach the service twice.
        assert 3 <= proxy.dropped <= 6
        proxy.drop = 0
        assert await ts.version() == 1  # committed by the first attempt, replayed by the others


class FailAfterCommit:
    """ASGI middleware: the first PUT runs to completion in the app, then the service fails it
    with a 500 before anything reaches the client."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.failed = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "PUT" or self.failed:
            await self.app(scope, receive, send)
            return

        async def swallow(message: Any) -> None:
            pass

        await self.app(scope, receive, swallow)
        self.failed += 1
        raise RuntimeError("the response was lost after the store committed")


@pytest.fixture(scope="module")
def failing_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:
    db = tmp_path_factory.mktemp("failing") / "trail.db"
    app = FailAfterCommit(create_app(f"sqlite:///{db}", secret=SECRET, clock=FakeClock()))
    with serve_in_thread(app) as url:  # type: ignore[arg-type]
        yield url, app


async def test_write_answered_with_500_after_commit_is_recorded_once(
    failing_service: tuple[str, Any], dag: str
) -> None:
    url, app = failing_service
    service = Service(url, FakeClock())
    async with connect(url, token=service.task_token(dag), backoff=0.001) as remote:
        ts = remote.task_store(dag, "r", "t")
        result = await ts.set("job_id", "spark-1")
        assert app.failed == 1
        assert result.version == 1
        assert await ts.version() == 1
    answer = service.call("GET", task_path(dag, "job_id"), token=service.task_token(dag))
    assert answer.json()["value"] == "spark-1"


async def test_client_that_says_another_try_than_its_token_is_refused(
    service: Service, dag: str
) -> None:
    async with connect(service.base_url, token=service.task_token(dag, try_number=1)) as remote:
        ts = remote.task_store(dag, "r", "t", try_number=2)
        with pytest.raises(PermissionDeniedError, match="403 try_mismatch"):
            await ts.set("k", 1)
        assert await ts.version() == 0
        assert (await remote.task_store(dag, "r", "t", try_number=1).set("k", 1)).version == 1


async def test_an_admin_client_writes_as_the_try_it_names(service: Service, dag: str) -> None:
    async with connect(service.base_url, token=service.token("admin", name="airflow")) as remote:
        await remote.task_store(dag, "r", "t", try_number=1).set("k", 1)
        await remote.task_store(dag, "r", "t", try_number=2).set("k", 2)
        with pytest.raises(StaleAttemptError):
            await remote.task_store(dag, "r", "t", try_number=1).set("k", 3)
        events = await remote.history(TaskScope(dag, "r", "t")).events()
    assert [(e.value, e.try_number, e.actor) for e in events] == [
        (1, 1, "api:airflow"),
        (2, 2, "api:airflow"),
    ]


async def test_expires_at_is_sent_exactly(service: Service, dag: str) -> None:
    expires = service.clock.now.astimezone(timezone(timedelta(hours=-5))) + timedelta(
        days=3, microseconds=7
    )
    async with connect(service.base_url, token=service.task_token(dag)) as remote:
        ts = remote.task_store(dag, "r", "t")
        await ts.set("k", 1, expires_at=expires)
        [event] = await remote.history(ts.scope).events()
        with pytest.raises(ValueError, match="not both"):
            await ts.set("k", 1, expires_at=expires, retention=NEVER_EXPIRE)
        with pytest.raises(TypeError, match="aware datetime"):
            await ts.set("k", 1, expires_at=datetime(2099, 1, 1))
    assert event.expires_at == expires


@pytest.mark.parametrize(
    "name", ["s3://bucket/orders", "a/b", "/lead", "trail/", "50%", "%2F", "sp ace+plus"]
)
async def test_asset_names_with_slashes_and_escapes(service: Service, dag: str, name: str) -> None:
    async with connect(service.base_url, token=service.token("admin")) as remote:
        assets = remote.asset_store(name=f"{dag}{name}", uri=f"{dag}{name}")
        await assets.set("k/ey", name)
        assert await assets.get("k/ey") == name
        assert await assets.items() == {"k/ey": name}
        events = await remote.history(assets.scope).events()
        assert events[0].scope == assets.scope


async def test_task_ids_with_slashes(service: Service, dag: str) -> None:
    run, task = "run/with/slashes", "group/task"
    token = service.task_token(dag + "/x", run=run, task=task)
    async with connect(service.base_url, token=token) as remote:
        ts = remote.task_store(dag + "/x", run, task)
        await ts.set("/k/", 1)
        assert await ts.items() == {"/k/": 1}
        assert [e.key for e in await remote.history(ts.scope).events()] == ["/k/"]


def test_idempotency_ids_grow_with_time_and_differ_in_a_forked_child() -> None:
    ids = [new_idempotency_id() for _ in range(1000)]
    assert ids == sorted(ids), "ids made one after another must sort in that order"
    assert len(set(ids)) == len(ids)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: send one id and leave at once
        os.write(write, new_idempotency_id().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 100).decode()
    os.close(read)
    # The nonce sits after the 16 hex digits of the time: a child never repeats its parent's.
    assert child[16:32] != ids[-1][16:32]
