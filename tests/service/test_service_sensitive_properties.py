"""Property: whatever sequence of PUT, PATCH, batch and client writes, with and without
`sensitive`, an auditor never sees a value written while its key was sensitive, in any read:
GET, list, history, timeline, state and diff."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore.client import BlockingRemote, connect_blocking
from service.service_helpers import Service, task_path

Kind = Literal["put", "patch", "batch", "client_set", "client_set_many", "client_patch", "delete"]
KEYS = ("pw", "token")

ops = st.lists(
    st.tuples(
        st.sampled_from(
            ["put", "patch", "batch", "client_set", "client_set_many", "client_patch", "delete"]
        ),
        st.sampled_from(KEYS),
        st.sampled_from([None, True, False]),
    ),
    min_size=1,
    max_size=10,
)


@pytest.fixture(scope="module")
def remote(service: Service) -> Iterator[BlockingRemote]:
    # One client for every example; each example writes to a task instance of its own.
    with connect_blocking(service.base_url, token=service.token("admin")) as client:
        yield client


def _body(value: str, sensitive: bool | None) -> dict[str, object]:
    return {"value": value} if sensitive is None else {"value": value, "sensitive": sensitive}


@settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops)
def test_auditor_never_sees_a_value_written_while_its_key_was_sensitive(
    service: Service, remote: BlockingRemote, steps: list[tuple[Kind, str, bool | None]]
) -> None:
    dag = f"prop-{uuid.uuid4().hex[:12]}"
    token = service.task_token(dag)
    client = remote.task_store(dag, "r", "t")
    flags: dict[str, bool] = {}  # the live keys and their flags, as the model has them
    secrets: set[str] = set()
    written: dict[str, str] = {}
    for n, (kind, key, sensitive) in enumerate(steps):
        value = f"value-{n}-{uuid.uuid4().hex[:8]}"
        if kind == "delete":
            service.call("DELETE", task_path(dag, key), token=token)
            flags.pop(key, None)
            continue
        if kind in ("patch", "client_patch") and key not in flags:
            continue  # PATCH needs a live key (404 otherwise)
        match kind:
            case "put":
                got = service.call("PUT", task_path(dag, key), _body(value, sensitive), token=token)
                assert got.status == 200, got
            case "patch":
                body = _body(value, sensitive)
                got = service.call("PATCH", task_path(dag, key), body, token=token)
                assert got.status == 200, got
            case "batch":
                batch = task_path(dag).replace("/store", "/store:batch")
                body = {"values": {key: value}}
                if sensitive is not None:
                    body["sensitive"] = sensitive
                assert service.call("POST", batch, body, token=token).status == 200
            case "client_set":
                client.set(key, value, sensitive=sensitive)
            case "client_set_many":
                client.set_many({key: value}, sensitive=sensitive)
            case "client_patch":
                client.patch(key, value, sensitive=sensitive)
        flag = flags.get(key, False) if sensitive is None else sensitive
        flags[key] = flag
        written[key] = value
        if flag:
            secrets.add(value)

    auditor = service.token("auditor")
    base = task_path(dag).removesuffix("/store")
    version = service.call("GET", task_path(dag), token=token).json()["version"]
    routes = [f"{base}/store", f"{base}/history"]
    routes += [f"{base}/store/{key}" for key in KEYS]
    routes += [f"{base}/timeline/{key}" for key in KEYS]
    routes += [f"{base}/state?version={v}" for v in range(version + 1)]
    routes += [f"{base}/diff?from_version={v}&to_version={version}" for v in range(version + 1)]
    seen = "\n".join(service.call("GET", route, token=auditor).body.decode() for route in routes)
    assert not [secret for secret in secrets if secret in seen]
    # The task's own token does see its secrets: what the auditor misses was written.
    for key, value in written.items():
        if key in flags:
            own = service.call("GET", task_path(dag, key), token=token).json()
            assert (own["value"], own.get("sensitive", False)) == (value, flags[key])
