"""GET /api/v1/events: the live feed as Server-Sent Events, who may follow what, masking, and a
client that disconnects and resumes with Last-Event-ID while two processes write."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import postgres_schema_url

from eventstore import open_store
from eventstore.service import create_app, serve_in_thread
from service.service_helpers import SECRET, Service, task_path

WRITER = Path(__file__).parent.parent / "feed_writer.py"


class Stream:
    """One SSE connection: messages as (id, data) pairs, data None for an id-only message."""

    def __init__(
        self, service: Service, path: str, token: str, *, last_id: str | None = None, wait=30.0
    ) -> None:  # type: ignore[no-untyped-def]
        headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
        if last_id is not None:
            headers["Last-Event-ID"] = last_id
        self.connection = http.client.HTTPConnection(service.host, service.port, timeout=wait)
        self.connection.request("GET", path, headers=headers)
        self.response = self.connection.getresponse()
        self.status = self.response.status

    def messages(self) -> Iterator[tuple[str | None, Any]]:
        event_id: str | None = None
        data: list[str] = []
        while True:
            line = self.response.fp.readline().decode()
            if not line:
                return
            line = line.rstrip("\n")
            if line == "":
                if event_id is not None or data:
                    yield event_id, json.loads("\n".join(data)) if data else None
                event_id, data = None, []
            elif line.startswith("id: "):
                event_id = line[4:]
            elif line.startswith("data: "):
                data.append(line[6:])

    def take(self, n: int) -> list[dict[str, Any]]:
        events = []
        for _, data in self.messages():
            if data is not None:
                events.append(data)
                if len(events) == n:
                    break
        return events

    def close(self) -> None:
        self.connection.close()


def put(service: Service, dag: str, key: str, value: Any, **options: Any) -> int:
    got = service.call(
        "PUT", task_path(dag, key, **options), {"value": value}, token=service.token()
    )
    assert got.status == 200, got
    seq: int = got.json()["seq"]
    return seq


def test_the_feed_streams_events_in_position_order_then_new_ones(
    service: Service, dag: str
) -> None:
    first = put(service, dag, "offset", 1)
    put(service, dag, "offset", 2)
    stream = Stream(service, f"/api/v1/events?after_seq={first - 1}&dag={dag}", service.token())
    try:
        assert stream.status == 200
        assert stream.response.getheader("Content-Type", "").startswith("text/event-stream")
        caught_up = stream.take(2)
        put(service, dag, "offset", 3, task="other")
        (followed,) = stream.take(1)
    finally:
        stream.close()
    assert [e["value"] for e in [*caught_up, followed]] == [1, 2, 3]
    assert [e["seq"] for e in caught_up] == [first, first + 1]
    assert followed["scope"]["task_id"] == "other"
    assert followed["kind"] == "set"


def test_the_feed_resumes_after_the_last_event_id(service: Service, dag: str) -> None:
    seqs = [put(service, dag, "k", n) for n in range(4)]
    stream = Stream(service, f"/api/v1/events?dag={dag}", service.token(), last_id=str(seqs[1]))
    try:
        events = stream.take(2)
    finally:
        stream.close()
    assert [e["seq"] for e in events] == seqs[2:]


def test_a_task_token_follows_only_its_own_task_instance(service: Service, dag: str) -> None:
    put(service, dag, "mine", 1)
    put(service, dag, "theirs", 1, task="other")
    last = put(service, dag, "mine", 2)
    token = service.task_token(dag)
    stream = Stream(service, f"/api/v1/events?after_seq={last - 3}", token)
    try:
        events = stream.take(2)
    finally:
        stream.close()
    assert [(e["key"], e["value"]) for e in events] == [("mine", 1), ("mine", 2)]
    for query in (f"?dag={dag}&task=other", "?kind=asset", f"?dag={dag}-other"):
        got = service.call("GET", f"/api/v1/events{query}", token=token)
        assert (got.status, got.reason) == (403, "forbidden"), query


@pytest.mark.parametrize("role", ["auditor", "admin"])
def test_auditors_and_admins_follow_every_scope(service: Service, dag: str, role: str) -> None:
    a = put(service, dag, "k", 1, task="a")
    put(service, dag, "k", 2, task="b")
    stream = Stream(service, f"/api/v1/events?after_seq={a - 1}&dag={dag}", service.token(role))
    try:
        events = stream.take(2)
    finally:
        stream.close()
    assert [e["scope"]["task_id"] for e in events] == ["a", "b"]


def test_the_feed_masks_sensitive_values_for_those_who_may_not_see_them(
    service: Service, dag: str
) -> None:
    got = service.call(
        "PUT",
        task_path(dag, "token"),
        {"value": "s3cret", "sensitive": True},
        token=service.token(),
    )
    seq = got.json()["seq"]
    seen = {}
    for who, token in (
        ("auditor", service.token("auditor")),
        ("admin", service.token()),
        ("own task", service.task_token(dag)),
    ):
        stream = Stream(service, f"/api/v1/events?after_seq={seq - 1}&dag={dag}", token)
        try:
            (event,) = stream.take(1)
        finally:
            stream.close()
        seen[who] = (event["value"], event["sensitive"])
    assert seen == {
        "auditor": (None, True),
        "admin": ("s3cret", True),
        "own task": ("s3cret", True),
    }


def test_the_feed_refuses_bad_positions_and_filters(service: Service) -> None:
    token = service.token()
    for path, headers in (
        ("/api/v1/events?after_seq=-1", {}),
        ("/api/v1/events?after_seq=x", {}),
        ("/api/v1/events?kind=table", {}),
        ("/api/v1/events?dag=", {}),
        ("/api/v1/events", {"Last-Event-ID": "seven"}),
    ):
        got = service.call("GET", path, token=token, headers=headers)
        assert got.status == 422, (path, headers, got)
    assert service.call("GET", "/api/v1/events").status == 401


# --- two writer processes, a client that keeps reconnecting ---------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Service, str]]:
    with ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path / 'trail.db'}"
        else:
            url = stack.enter_context(postgres_schema_url())
        app = create_app(url, secret=SECRET)
        base_url = stack.enter_context(serve_in_thread(app))
        yield Service(base_url, None), url  # type: ignore[arg-type]


async def _log(url: str) -> tuple[list[int], int]:
    async with open_store(url) as store:
        seqs = [row.seq async for row in store.backend.select_all_events()]
        return seqs, (await store.backend.select_head()).last_seq


def test_an_sse_client_resuming_with_last_event_id_sees_every_position_of_two_writers(
    served: tuple[Service, str],
) -> None:
    service, url = served
    token = service.token("auditor")
    put(service, "feed-setup", "ready", True)  # the schema exists before the writers open it
    writers = [
        subprocess.Popen([sys.executable, str(WRITER), url, name, "300", "3"])
        for name in ("p1", "p2")
    ]
    seen: list[int] = []
    last_id: str | None = None
    reconnects = 0
    try:
        for _ in range(10_000):  # a hang guard; each round reads or waits a moment
            done = all(w.poll() is not None for w in writers)
            if done and seen and seen[-1] == anyio.run(_log, url)[1]:
                break
            stream = Stream(service, "/api/v1/events", token, last_id=last_id, wait=1.0)
            reconnects += 1
            try:
                for event_id, data in stream.messages():
                    if event_id is not None:
                        last_id = event_id
                    if data is not None:
                        seen.append(data["seq"])
                        if len(seen) % 41 == 0:
                            break
            except TimeoutError:
                pass  # quiet for a moment: look whether the writers are done
            finally:
                stream.close()
    finally:
        for w in writers:
            w.wait(timeout=120)
    assert [w.returncode for w in writers] == [0, 0]
    log, _ = anyio.run(_log, url)
    assert seen == log, "every position once, in order"
    assert seen == list(range(1, len(log) + 1))
    assert reconnects > 5
