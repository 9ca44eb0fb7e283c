"""Secrets through the HTTP API: sensitive values masked for the auditor, erasure by admins, on an
encrypted store and a plain one."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from eventstore import StoreConfig, generate_master_key
from eventstore.service import create_app, serve_in_thread
from service.service_helpers import SECRET, FakeClock, Service, task_path

SECRET_VALUE = "tok-ocelot-5521"


@pytest.fixture(scope="module", params=["encrypted", "plain"])
def service(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    clock = FakeClock()
    folder = tmp_path_factory.mktemp("secrets")
    keys = (generate_master_key(),) if request.param == "encrypted" else ()
    with ExitStack() as stack:
        app = create_app(
            f"sqlite:///{folder / 'trail.db'}",
            secret=SECRET,
            config=StoreConfig(master_keys=keys),
            clock=clock,
        )
        yield Service(stack.enter_context(serve_in_thread(app)), clock)


def history_path(dag: str, route: str) -> str:
    return task_path(dag).removesuffix("/store") + route


@pytest.fixture
def written(service: Service, dag: str) -> dict[str, Any]:
    """Try 1 writes a sensitive token and a plain offset, then try 2 changes both."""
    first, second = service.task_token(dag, try_number=1), service.task_token(dag, try_number=2)
    put = service.call(
        "PUT", task_path(dag, "token"), {"value": SECRET_VALUE, "sensitive": True}, token=first
    )
    assert put.status == 200, put
    service.call("PUT", task_path(dag, "offset"), {"value": 1}, token=first)
    service.clock.advance()
    batch = service.call(
        "POST",
        task_path(dag).replace("/store", "/store:batch"),
        {"values": {"token": "not-secret", "offset": 2}, "sensitive": False},
        token=second,
    )
    assert batch.status == 200, batch
    service.call(
        "PUT",
        task_path(dag, "token"),
        {"value": SECRET_VALUE + "-3", "sensitive": True},
        token=second,
    )
    return {"own": second}


READS = [
    "/store/token",
    "/store",
    "/history",
    "/timeline/token",
    "/state?end_of_try=1",
    "/diff?from_end_of_try=1&to_end_of_try=2",
]


@pytest.mark.parametrize("route", READS)
def test_auditor_sees_sensitive_values_masked(
    service: Service, dag: str, written: dict[str, Any], route: str
) -> None:
    path = history_path(dag, route)
    auditor = service.call("GET", path, token=service.token("auditor"))
    assert auditor.status == 200, auditor
    assert SECRET_VALUE.encode() not in auditor.body
    for who in (written["own"], service.token("admin")):
        shown = service.call("GET", path, token=who)
        assert shown.status == 200, shown
        assert SECRET_VALUE.encode() in shown.body


def test_masked_forms(service: Service, dag: str, written: dict[str, Any]) -> None:
    auditor = service.token("auditor")
    entry = service.call("GET", task_path(dag, "token"), token=auditor).json()
    assert (entry["value"], entry["sensitive"]) == (None, True)
    listed = service.call("GET", task_path(dag), token=auditor).json()["items"]
    assert [(i["key"], i["value"], i.get("sensitive", False)) for i in listed] == [
        ("offset", 2, False),
        ("token", None, True),
    ]
    events = service.call("GET", history_path(dag, "/history"), token=auditor).json()["events"]
    assert [(e["key"], e["value"], e["sensitive"]) for e in events] == [
        ("token", None, True),
        ("offset", 1, False),
        ("token", "not-secret", False),  # written without the mark
        ("offset", 2, False),
        ("token", None, True),
    ]
    state = service.call("GET", history_path(dag, "/state?end_of_try=1"), token=auditor).json()
    assert state["state"] == {"offset": 1, "token": "<masked>"}
    diff = service.call(
        "GET", history_path(dag, "/diff?from_end_of_try=1&to_end_of_try=2"), token=auditor
    ).json()
    # Compared on the real values: the sensitive token did change.
    assert diff["changed"] == {"offset": [1, 2], "token": ["<masked>", "<masked>"]}
    own = service.call("GET", task_path(dag, "token"), token=written["own"]).json()
    assert (own["value"], own["sensitive"]) == (SECRET_VALUE + "-3", True)


def test_another_task_token_cannot_read_nor_unmask(
    service: Service, dag: str, written: dict[str, Any]
) -> None:
    other = service.task_token(dag, task="other")
    assert service.call("GET", task_path(dag, "token"), token=other).status == 403


def test_only_admins_erase(service: Service, dag: str, written: dict[str, Any]) -> None:
    erase = task_path(dag).replace("/store", "/store:erase")
    for token in (written["own"], service.token("auditor")):
        refused = service.call("POST", erase, token=token)
        assert refused.status == 403, refused
        assert refused.reason == "forbidden"
    done = service.call("POST", erase, token=service.token("admin"))
    assert done.status == 200, done
    assert done.json()["events"] == 2
    admin = service.token("admin")
    assert service.call("GET", task_path(dag, "token"), token=admin).status == 404
    events = service.call("GET", history_path(dag, "/history"), token=admin).json()["events"]
    assert [e["kind"] for e in events][-2:] == ["clear", "erased"]
    assert all(e["erased"] and e["value"] is None for e in events if e["kind"] == "set")
    assert (
        SECRET_VALUE.encode()
        not in service.call("GET", history_path(dag, "/history"), token=admin).body
    )
    state = service.call("GET", history_path(dag, "/state?end_of_try=1"), token=admin).json()
    assert state["state"] == {"offset": "<erased>", "token": "<erased>"}
    kinds = service.call("GET", history_path(dag, "/history?kinds=erased"), token=admin)
    assert [e["kind"] for e in kinds.json()["events"]] == ["erased"]
    unknown = service.call(
        "POST", task_path("never-" + dag).replace("/store", "/store:erase"), token=admin
    )
    assert unknown.status == 404


def test_erase_route_is_in_the_openapi_document(service: Service) -> None:
    document = service.call("GET", "/openapi.json").json()
    erase = [p for p in document["paths"] if p.endswith("/store:erase")]
    assert len(erase) == 3  # task instance, asset by name, asset by uri


async def test_client_marks_values_sensitive(service: Service, dag: str) -> None:
    from eventstore.client import connect

    async with connect(service.base_url, token=service.task_token(dag, try_number=1)) as remote:
        ts = remote.task_store(dag, "r", "t", try_number=1)
        await ts.set("token", SECRET_VALUE, sensitive=True)
        await ts.set_many({"a": SECRET_VALUE, "b": 2}, sensitive=True)
        assert await ts.get("token") == SECRET_VALUE  # its own token sees it
        assert await ts.items() == {"a": SECRET_VALUE, "b": 2, "token": SECRET_VALUE}
        assets = remote.asset_store(name=f"asset-{dag}")
        await assets.set("key", SECRET_VALUE, sensitive=True)
    listed = service.call("GET", task_path(dag), token=service.token("auditor")).json()
    assert [(i["key"], i["value"]) for i in listed["items"]] == [
        ("a", None),
        ("b", None),
        ("token", None),
    ]
