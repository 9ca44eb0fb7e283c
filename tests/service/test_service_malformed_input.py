"""The inputs that once answered 500, each now a 4xx with a reason, on both backends; nothing is
written and the service answers the next request. And the cap on keys per batch."""

from __future__ import annotations

import json

import pytest

from eventstore.log.values import MAX_VALUE_DEPTH
from eventstore.service.models import MAX_BATCH_KEYS
from service.service_helpers import Service, task_path


def _deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


BAD_WRITES = [
    (
        "expires_at late",
        b'{"value": 1, "expires_at": "9999-12-31T23:59:59-01:00"}',
        422,
        "bad_expiry",
    ),
    (
        "expires_at early",
        b'{"value": 1, "expires_at": "0001-01-01T00:00:00+14:00"}',
        422,
        "bad_expiry",
    ),
    ("nested 1,000 deep", b'{"value": ' + _deep(1_000) + b"}", 422, "value_too_deep"),
    ("nested 100,000 deep", b'{"value": ' + _deep(100_000) + b"}", 422, "value_too_deep"),
    (
        "nested one past the limit",
        b'{"value": ' + _deep(MAX_VALUE_DEPTH + 1) + b"}",
        422,
        "value_too_deep",
    ),
    ("bad UTF-8 in a value", b'{"value": "\xff\xfe"}', 422, "bad_body"),
    ("bad UTF-8 in a name", b'{"value": 1, "\xc3\x28": 2}', 422, "bad_body"),
    ("a lone surrogate", b'{"value": "\\ud800"}', 422, "bad_body"),
    ("5,000 digits", b'{"value": ' + b"9" * 5000 + b"}", 422, "bad_body"),
]


@pytest.mark.parametrize(
    ("body", "status", "reason"), [b[1:] for b in BAD_WRITES], ids=[b[0] for b in BAD_WRITES]
)
def test_malformed_write_is_refused_with_a_reason_and_writes_nothing(
    service: Service, dag: str, body: bytes, status: int, reason: str
) -> None:
    token = service.task_token(dag)
    got = service.call("PUT", task_path(dag, "k"), raw=body, token=token)
    assert (got.status, got.reason) == (status, reason), got
    assert got.json()["message"]
    assert service.call("GET", task_path(dag), token=token).json()["version"] == 0


def test_value_nested_to_the_limit_is_stored(service: Service, dag: str) -> None:
    token = service.task_token(dag)
    body = b'{"value": ' + _deep(MAX_VALUE_DEPTH) + b"}"
    assert service.call("PUT", task_path(dag, "k"), raw=body, token=token).status == 200
    got = service.call("GET", task_path(dag, "k"), token=token).json()["value"]
    assert json.dumps(got).count("[") == MAX_VALUE_DEPTH


BAD_READS = [
    ("state at a late time", "/state?at=9999-12-31T23:59:59-01:00", "bad_query"),
    ("state at an early time", "/state?at=0001-01-01T00:00:00%2B14:00", "bad_query"),
    ("diff from an early time", "/diff?from_at=0001-01-01T00:00:00%2B14:00&to_seq=1", "bad_query"),
    ("history since an early time", "/history?since=0001-01-01T00:00:00%2B14:00", "bad_query"),
    ("history until a late time", "/history?until=9999-12-31T23:59:59-01:00", "bad_query"),
    ("history after 5,000 digits", "/history?after_seq=" + "9" * 5000, "bad_query"),
]


@pytest.mark.parametrize(
    ("route", "reason"), [b[1:] for b in BAD_READS], ids=[b[0] for b in BAD_READS]
)
def test_malformed_history_query_is_422(
    service: Service, dag: str, route: str, reason: str
) -> None:
    token = service.task_token(dag)
    service.call("PUT", task_path(dag, "k"), {"value": 1}, token=token)
    got = service.call("GET", task_path(dag).removesuffix("/store") + route, token=token)
    assert (got.status, got.reason) == (422, reason), got
    assert "outside the UTC calendar" in got.json()["message"] or "integer" in got.json()["message"]


@pytest.mark.parametrize(
    "query",
    [
        "after=99999999999999999999999999.1",
        "after=1.99999999999999999999999999",
        "since=9999-12-31T23:59:59-01:00",
        "until=0001-01-01T00:00:00%2B14:00",
    ],
)
def test_malformed_scopes_query_is_422(service: Service, query: str) -> None:
    got = service.call("GET", f"/api/v1/scopes?{query}", token=service.token("auditor"))
    assert (got.status, got.reason) == (422, "bad_query"), got


@pytest.mark.parametrize("digits", ["9" * 5000, "-" + "9" * 5000, "2147483648"])
def test_map_index_past_the_largest_is_422(service: Service, dag: str, digits: str) -> None:
    path = f"/api/v1/tasks/{dag}/r/t/{digits}/store/k"
    got = service.call("GET", path, token=service.token("admin"))
    assert (got.status, got.reason) == (422, "bad_scope"), got
    assert got.headers["content-type"] == "application/json"


@pytest.mark.parametrize("header", ["If-Match", "Tasktrail-Try"])
def test_non_ascii_digits_in_a_header_are_422(service: Service, dag: str, header: str) -> None:
    token = service.task_token(dag)
    got = service.call(
        "PUT", task_path(dag, "k"), {"value": 1}, token=token, headers={header: "\xb2"}
    )
    assert (got.status, got.reason) == (422, "bad_header"), got


def test_batch_over_the_cap_is_413_and_writes_nothing(service: Service, dag: str) -> None:
    token = service.task_token(dag)
    batch = task_path(dag).replace("/store", "/store:batch")
    values = {f"k{i}": i for i in range(MAX_BATCH_KEYS + 1)}
    got = service.call("POST", batch, {"values": values}, token=token)
    assert (got.status, got.reason) == (413, "too_many_keys"), got
    assert f"at most {MAX_BATCH_KEYS} keys" in got.json()["message"]
    assert service.call("GET", task_path(dag), token=token).json()["version"] == 0
    values.pop(f"k{MAX_BATCH_KEYS}")
    assert service.call("POST", batch, {"values": values}, token=token).status == 200
    listed = service.call("GET", task_path(dag) + "?limit=0", token=token).json()
    assert listed["version"] == MAX_BATCH_KEYS
