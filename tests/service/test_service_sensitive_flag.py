"""The sensitive flag over HTTP: PUT, PATCH and batch writes that do not say `sensitive` keep a
key's flag, so an auditor never sees a value written while the key was sensitive; a body that
names a field twice is refused rather than read as its last duplicate."""

from __future__ import annotations

import json

import pytest

from service.service_helpers import Service, task_path

AUDITOR_READS = [
    "/store/pw",
    "/store",
    "/history",
    "/timeline/pw",
    "/state?seq=1000000000",
    "/diff?from_version=0&to_seq=1000000000",
]


def _route(dag: str, route: str) -> str:
    return task_path(dag).removesuffix("/store") + route


def _auditor_sees(service: Service, dag: str) -> str:
    seen = []
    for route in AUDITOR_READS:
        got = service.call("GET", _route(dag, route), token=service.token("auditor"))
        assert got.status == 200, (route, got)
        seen.append(got.body.decode())
    return "\n".join(seen)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PATCH", "/store/pw", {"value": "SECRET-2"}),
        ("PUT", "/store/pw", {"value": "SECRET-2"}),
        ("PUT", "/store/pw", {"value": "SECRET-2", "retention": "never"}),
        ("POST", "/store:batch", {"values": {"pw": "SECRET-2", "plain": 1}}),
    ],
    ids=["patch", "put", "put-with-retention", "batch"],
)
def test_write_without_sensitive_keeps_the_value_masked_for_the_auditor(
    service: Service, dag: str, method: str, path: str, body: dict[str, object]
) -> None:
    token = service.task_token(dag)
    first = {"value": "SECRET-1", "sensitive": True}
    assert service.call("PUT", task_path(dag, "pw"), first, token=token).status == 200
    written = service.call(method, _route(dag, path), body, token=token)
    assert written.status == 200, written
    seen = _auditor_sees(service, dag)
    assert "SECRET-1" not in seen
    assert "SECRET-2" not in seen
    own = service.call("GET", task_path(dag, "pw"), token=token).json()
    assert own["value"] == "SECRET-2"
    assert own["sensitive"] is True


def test_sensitive_false_clears_the_flag_as_an_event_and_old_values_stay_masked(
    service: Service, dag: str
) -> None:
    token = service.task_token(dag)
    service.call("PUT", task_path(dag, "pw"), {"value": "SECRET-1", "sensitive": True}, token=token)
    cleared = service.call(
        "PATCH", task_path(dag, "pw"), {"value": "public", "sensitive": False}, token=token
    )
    assert cleared.status == 200, cleared
    history = service.call("GET", _route(dag, "/history"), token=service.token("auditor")).json()
    sets = [(e["value"], e["sensitive"], e["sensitive_cleared"]) for e in history["events"]]
    assert sets == [(None, True, False), ("public", False, True)]
    seen = _auditor_sees(service, dag)
    assert "SECRET-1" not in seen
    assert "public" in seen


DUPLICATES = [
    ("sensitive twice", b'{"value": "SECRET", "sensitive": true, "sensitive": false}', "sensitive"),
    ("value twice", b'{"value": "SECRET", "value": "other"}', "value"),
    ("escaped name", b'{"value": "S", "sensitive": true, "sensitiv\\u0065": false}', "sensitive"),
    ("inside the value", b'{"value": {"a": 1, "b": [{"c": 1, "c": 2}]}}', "c"),
]


@pytest.mark.parametrize(
    ("body", "name"), [d[1:] for d in DUPLICATES], ids=[d[0] for d in DUPLICATES]
)
def test_put_body_naming_a_field_twice_is_refused_and_writes_nothing(
    service: Service, dag: str, body: bytes, name: str
) -> None:
    token = service.task_token(dag)
    got = service.call("PUT", task_path(dag, "pw"), raw=body, token=token)
    assert got.status == 422, got
    assert got.reason == "duplicate_field"
    assert repr(name) in got.json()["message"]
    assert service.call("GET", task_path(dag), token=token).json()["version"] == 0


def test_batch_naming_a_key_twice_is_refused(service: Service, dag: str) -> None:
    token = service.task_token(dag)
    body = b'{"values": {"pw": "SECRET", "other": 1, "pw": "x"}, "sensitive": true}'
    got = service.call("POST", _route(dag, "/store:batch"), raw=body, token=token)
    assert got.status == 422, got
    assert got.reason == "duplicate_field"
    assert "'pw'" in got.json()["message"]


def test_same_field_name_in_different_objects_is_no_duplicate(service: Service, dag: str) -> None:
    token = service.task_token(dag)
    value = [{"a": 1, "b": 2}, {"a": 3, "b": 4}]
    body = json.dumps({"value": value, "sensitive": False}).encode()
    got = service.call("PUT", task_path(dag, "k"), raw=body, token=token)
    assert got.status == 200, got
    assert service.call("GET", task_path(dag, "k"), token=token).json()["value"] == value
