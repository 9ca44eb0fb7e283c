"""Every error status the API answers, as JSON with a reason; bad input writes nothing."""

from __future__ import annotations

import http.client
import json
from typing import Any

import pytest

from service.service_helpers import Service, task_path

BIG = "x" * 70_000

BAD_PUTS = [
    ("null value", b'{"value": null}', 422, "null_value"),
    ("nested null is fine", b'{"value": {"a": null}}', 200, None),
    ("NaN", b'{"value": NaN}', 422, "bad_body"),
    ("Infinity", b'{"value": [1, Infinity]}', 422, "bad_body"),
    ("overflowing number", b'{"value": 1e999}', 422, "non_finite_value"),
    ("not JSON", b"value=1", 422, "bad_body"),
    ("empty body", b"", 422, "bad_body"),
    ("not an object", b"[1]", 422, "bad_body"),
    ("missing value", b'{"retention": "never"}', 422, "bad_body"),
    ("unknown field", b'{"value": 1, "retentoin": "never"}', 422, "bad_body"),
    ("negative retention", b'{"value": 1, "retention": -5}', 422, "bad_retention"),
    ("zero retention", b'{"value": 1, "retention": 0}', 422, "bad_retention"),
    ("word retention", b'{"value": 1, "retention": "forever"}', 422, "bad_retention"),
    ("bool retention", b'{"value": 1, "retention": true}', 422, "bad_retention"),
    ("huge retention", b'{"value": 1, "retention": 1e300}', 422, "bad_retention"),
    ("too large", b'{"value": "' + BIG.encode() + b'"}', 413, "value_too_large"),
]


@pytest.mark.parametrize(
    ("body", "status", "reason"), [b[1:] for b in BAD_PUTS], ids=[b[0] for b in BAD_PUTS]
)
def test_bad_put_answers_status_and_reason_and_writes_nothing(
    service: Service, dag: str, body: bytes, status: int, reason: str | None
) -> None:
    token = service.task_token(dag)
    service.call("PUT", task_path(dag, "seed"), {"value": 0}, token=token)
    got = service.call("PUT", task_path(dag, "k"), raw=body, token=token)
    assert got.status == status, got
    listed = service.call("GET", task_path(dag), token=token).json()
    if reason is None:
        assert listed["version"] == 2
        return
    assert got.headers["content-type"] == "application/json"
    assert got.reason == reason
    assert got.json()["message"]
    assert listed["version"] == 1
    assert [i["key"] for i in listed["items"]] == ["seed"]


def test_value_too_large_names_size_and_limit(service: Service, dag: str) -> None:
    got = service.call("PUT", task_path(dag, "k"), {"value": BIG}, token=service.task_token(dag))
    assert got.status == 413
    assert got.json()["detail"] == {"key": "k", "size": 70_002, "limit": 65_535}


def test_key_over_512_characters_is_422(service: Service, dag: str) -> None:
    got = service.call(
        "PUT", task_path(dag, "k" * 513), {"value": 1}, token=service.task_token(dag)
    )
    assert (got.status, got.reason) == (422, "bad_key")
    assert "512" in got.json()["message"]


def test_empty_key_is_422(service: Service, dag: str) -> None:
    got = service.call("PUT", task_path(dag) + "/", {"value": 1}, token=service.task_token(dag))
    assert (got.status, got.reason) == (422, "bad_key")


def test_version_conflict_is_409_and_writes_nothing(service: Service, dag: str) -> None:
    token = service.task_token(dag)
    service.call("PUT", task_path(dag, "k"), {"value": 1}, token=token)
    got = service.call("DELETE", task_path(dag, "k"), token=token, headers={"If-Match": '"5"'})
    assert (got.status, got.reason) == (409, "version_conflict")
    assert service.call("GET", task_path(dag, "k"), token=token).json()["value"] == 1


def test_stale_attempt_is_410_and_writes_nothing(service: Service, dag: str) -> None:
    service.call(
        "PUT", task_path(dag, "k"), {"value": 3}, token=service.task_token(dag, try_number=3)
    )
    old = service.task_token(dag, try_number=2)
    for method, suffix, body in [
        ("PUT", "/k", {"value": 2}),
        ("PATCH", "/k", {"value": 2}),
        ("POST", ":batch", {"values": {"k": 2}}),
        ("DELETE", "/k", None),
        ("DELETE", "", None),
    ]:
        path = task_path(dag) + suffix
        got = service.call(method, path, body, token=old)
        assert (got.status, got.reason) == (410, "stale_attempt"), (method, suffix, got)
    listed = service.call("GET", task_path(dag), token=old).json()
    assert listed["version"] == 1
    assert listed["items"][0]["value"] == 3


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("If-Match", "seven"),
        ("If-Match", '"-1"'),
        ("Idempotency-Key", "x" * 201),
        ("Tasktrail-Try", ""),
        ("Tasktrail-Try", "two"),
    ],
)
def test_bad_headers_are_422(service: Service, dag: str, header: str, value: str) -> None:
    token = service.task_token(dag)
    got = service.call(
        "PUT", task_path(dag, "k"), {"value": 1}, token=token, headers={header: value}
    )
    assert (got.status, got.reason) == (422, "bad_header")
    assert service.call("GET", task_path(dag), token=token).json()["version"] == 0


@pytest.mark.parametrize(
    "query", ["?limit=-1", "?limit=1001", "?limit=ten", "?all_map_indices=maybe"]
)
def test_bad_query_parameters_are_422(service: Service, dag: str, query: str) -> None:
    method = "DELETE" if "all_map" in query else "GET"
    got = service.call(method, task_path(dag) + query, token=service.token("admin"))
    assert (got.status, got.reason) == (422, "bad_query")


def test_map_index_below_minus_one_is_422(service: Service, dag: str) -> None:
    got = service.call("GET", task_path(dag, map_index=-2), token=service.token("admin"))
    assert (got.status, got.reason) == (422, "bad_scope")


def test_oversized_body_is_413(service: Service, dag: str) -> None:
    body = b'{"values": {"k": "' + b"x" * (17 * 1024 * 1024) + b'"}}'
    got = service.call("POST", task_path(dag) + ":batch", raw=body, token=service.token("admin"))
    assert (got.status, got.reason) == (413, "body_too_large")


def _send_chunked(service: Service, path: str, chunks: list[bytes]) -> tuple[int, Any]:
    """A PUT/POST whose body is sent in chunks, with no Content-Length to refuse it by."""
    connection = http.client.HTTPConnection(service.host, service.port, timeout=60)
    try:
        headers = {
            "Authorization": f"Bearer {service.token('admin')}",
            "Content-Type": "application/json",
        }
        connection.request("POST", path, body=iter(chunks), headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_a_body_sent_in_chunks_is_read_whole(service: Service, dag: str) -> None:
    status, _ = _send_chunked(service, task_path(dag) + ":batch", [b'{"values": {"k"', b": 1}}"])
    assert status == 200
    got = service.call("GET", task_path(dag, "k"), token=service.token("admin"))
    assert got.json()["value"] == 1


def test_a_chunked_body_over_the_limit_is_413_and_writes_nothing(
    service: Service, dag: str
) -> None:
    chunks = [b'{"values": {"k": "'] + [b"x" * (1 << 20)] * 17 + [b'"}}']
    status, body = _send_chunked(service, task_path(dag) + ":batch", chunks)
    assert (status, body["reason"]) == (413, "body_too_large")
    assert "over the limit of 16777216" in body["message"]
    version = service.call("GET", task_path(dag), token=service.token("admin")).json()["version"]
    assert version == 0
