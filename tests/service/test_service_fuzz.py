"""Every route, fed the inputs that once answered 500: times at the edges of the calendar with
offsets, numbers past every limit, deep nesting, huge path parameters, duplicate fields, bad
UTF-8. Whatever comes in, the answer is never a 5xx, and every refusal is JSON with a reason.

Hypothesis drives each route of the OpenAPI table with strategies aimed at those edges (the
schemathesis test covers what the document describes); both backends, a real server.
"""

from __future__ import annotations

import http.client
import json
import re
from collections import Counter
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore.log.values import MAX_VALUE_DEPTH
from eventstore.service.app import ALL_OPERATIONS
from eventstore.service.routes import Operation
from service.service_helpers import Service

EXAMPLES_PER_ROUTE = 40
CASES: Counter[str] = Counter()  # requests sent per route, for the report at the end

EDGE_TIMES = [
    "9999-12-31T23:59:59-01:00",
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59.999999+00:00",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59-23:59",
    "2026-02-30T00:00:00Z",
    "2026-01-01T00:00:00",
    "1970-01-01T00:00:00+00:00",
    "2026-01-01T24:00:00Z",
    "",
]
HUGE_NUMBERS = [
    "9" * 5000,
    "-" + "9" * 5000,
    "99999999999999999999999999.1",
    "9223372036854775808",
    "-9223372036854775809",
    "1e999",
    "-0",
    "NaN",
    "²",
    "٣",
    "0x10",
]
BAD_TEXT = ["%FF", "%C3%28", "%ED%A0%80", "%00", "%2F%2F", "k" * 5000, "%E2%82"]

edge_text = st.one_of(
    st.sampled_from(EDGE_TIMES + HUGE_NUMBERS + BAD_TEXT),
    st.text(max_size=20).map(lambda t: quote(t, safe="")),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
)
segment = st.one_of(
    st.sampled_from(["d", "r", "t", "k", "a%2Fb", "-1", "0"]),
    st.sampled_from(HUGE_NUMBERS + BAD_TEXT),
    st.text(min_size=1, max_size=10).map(lambda t: quote(t, safe="")),
)


def _deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
raw_value = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    st.sampled_from(
        [
            _deep(MAX_VALUE_DEPTH),
            _deep(MAX_VALUE_DEPTH + 1),
            _deep(1_000),
            _deep(100_000),
            b"9" * 5000,
            b"1e400",
            b"-1e400",
            b'"\xff\xfe"',
            b'"\xed\xa0\x80"',
            b'"\\ud800"',
            b'{"a": 1, "a": 2}',
            b"null",
        ]
    ),
)
raw_field = st.sampled_from(
    [b"value", b"values", b"sensitive", b"retention", b"expires_at", b"sensitiv\\u0065", b"\xff"]
)
raw_scalar = st.one_of(
    raw_value,
    st.sampled_from([t.encode() for t in EDGE_TIMES]).map(lambda t: b'"' + t + b'"'),
    st.sampled_from([n.encode() for n in HUGE_NUMBERS[:6]]),
    st.sampled_from([b"true", b"false", b'"never"', b'"default"', b"0", b"-5", b"1e-7"]),
)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """An object of the request fields and some others, repeated at times, with edge values;
    or something that is not an object at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.sampled_from([b"", b"[1]", b"{", b"\xff", b'{"value": 1}garbage']))
    fields = draw(st.lists(st.tuples(raw_field, raw_scalar), max_size=4))
    if draw(st.booleans()):
        keys = draw(st.lists(st.sampled_from([b"k", b"pw", b"\xff", b"k" * 600]), max_size=4))
        batch = b"{" + b",".join(b'"' + k + b'": ' + draw(raw_value) for k in keys) + b"}"
        fields.append((b"values", batch))
    if draw(st.booleans()):
        fields.insert(0, (b"value", draw(raw_value)))
    return b"{" + b", ".join(b'"' + n + b'": ' + v for n, v in fields) + b"}"


def _query(op: Operation, draw: st.DrawFn) -> str:
    names = [p.name for p in op.params if p.location == "query"]
    chosen = draw(st.lists(st.sampled_from(names), max_size=4)) if names else []
    if draw(st.booleans()):
        chosen.append(draw(st.sampled_from(["at", "after", "since", "limit", "x", "%FF"])))
    pairs = [f"{quote(name, safe='%')}={quote(draw(edge_text), safe='%')}" for name in chosen]
    return "?" + "&".join(pairs) if pairs else ""


@st.composite
def requests(draw: st.DrawFn, op: Operation) -> tuple[str, bytes | None, dict[str, str]]:
    path = re.sub(r"\{([a-z_]+)(:[a-z]+)?\}", lambda m: quote(draw(segment), safe="%"), op.path)
    headers: dict[str, str] = {}
    if draw(st.booleans()):
        header = draw(st.sampled_from(["If-Match", "Tasktrail-Try", "Idempotency-Key"]))
        headers[header] = draw(st.sampled_from(["7", "²", "9" * 40, "", "\xff", '"1"', "-1"]))
    body = draw(bodies()) if op.body is not None or draw(st.integers(0, 4)) == 0 else None
    return path + _query(op, draw), body, headers


ROUTES = [op for op in ALL_OPERATIONS if op.path != "/api/v1/compact"]


@pytest.mark.parametrize("op", ROUTES, ids=[f"{op.method} {op.template}" for op in ROUTES])
def test_no_route_answers_5xx_to_malformed_input(service: Service, op: Operation) -> None:
    token = service.token("admin")

    @settings(
        max_examples=EXAMPLES_PER_ROUTE,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(requests(op))
    def run(request: tuple[str, bytes | None, dict[str, str]]) -> None:
        path, body, headers = request
        CASES[f"{op.method} {op.template}"] += 1
        answer = _send(
            service, op.method, path, body, {**headers, "Authorization": f"Bearer {token}"}
        )
        status, content = answer
        assert status < 500, (op.method, path, body and body[:200], headers, content[:300])
        if status >= 400 and content != b"Invalid HTTP request received.":
            problem: Any = json.loads(content)
            assert problem["reason"], content
            assert problem["message"], content

    run()
    assert CASES[f"{op.method} {op.template}"] >= EXAMPLES_PER_ROUTE // 2


def _send(
    service: Service, method: str, path: str, body: bytes | None, headers: dict[str, str]
) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(service.host, service.port, timeout=60)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value.encode("latin-1"))
        if body is not None:
            connection.putheader("Content-Type", "application/json")
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        if response.status == 200 and "event-stream" in (response.getheader("content-type") or ""):
            return response.status, b""  # the live feed: an endless stream, answered at once
        return response.status, response.read()
    finally:
        connection.close()


@pytest.fixture(scope="module", autouse=True)
def _report_cases() -> Any:
    """With -s, the number of requests each route was sent (for the issue's note)."""
    yield
    for route, count in sorted(CASES.items()):
        print(f"fuzz: {count:5d} requests  {route}")
    print(f"fuzz: {sum(CASES.values()):5d} requests over {len(CASES)} routes, none answered 5xx")
