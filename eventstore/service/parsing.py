"""Reading and checking what a request sends: its body (size, JSON, repeated fields) and times."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any, Final

import msgspec
from starlette.requests import ClientDisconnect
from starlette.types import Receive

from eventstore.log.values import MAX_VALUE_DEPTH
from eventstore.service.errors import HTTPProblem
from eventstore.service.models import MAX_BATCH_KEYS

__all__ = [
    "INLINE_BODY_BYTES",
    "decode_body",
    "in_utc_calendar",
    "query_time",
    "read_body",
    "too_large",
]


async def read_body(receive: Receive, limit: int) -> bytes:
    """The request body, straight from the ASGI messages (Starlette's `Request.body` runs an
    async generator for it); 413 as soon as it is over `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise too_large(f"over {limit} bytes", limit)
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


# Bodies up to this size are decoded on the event loop (about a millisecond at most).
INLINE_BODY_BYTES: Final = 64 * 1024


def decode_body(raw: bytes, kind: type[Any]) -> Any:
    """The body decoded as `kind`, or the 4xx that says what is wrong with it.

    msgspec keeps the last of an object's repeated fields, so `{"sensitive": true,
    "sensitive": false}` would quietly mean false: a second, strict pass refuses any object of
    the body (the body's own fields, a batch's keys, a value's dicts) that names a field twice.
    """
    try:
        body = msgspec.json.decode(raw, type=kind)
        repeated = _repeated_name(raw, body)
    except msgspec.ValidationError as error:
        raise _invalid(str(error)) from None
    except msgspec.DecodeError as error:
        raise HTTPProblem(
            422, "bad_body", f"the request body is not JSON: {error}; send a JSON object"
        ) from None
    except RecursionError:
        raise HTTPProblem(
            422,
            "value_too_deep",
            f"the request body nests lists and objects too deeply; a value may nest at most "
            f"{MAX_VALUE_DEPTH} levels",
        ) from None
    if repeated is not None:
        raise HTTPProblem(
            422,
            "duplicate_field",
            f"the request body names {repeated!r} twice in one object; send each field once",
        )
    return body


def _invalid(text: str) -> HTTPProblem:
    if "in `$.values`" in text and "length" in text:
        return HTTPProblem(422, "bad_key", f"a key must be 1 to 512 characters: {text}")
    if text.startswith("Expected `object` of length <=") and text.endswith("`$.values`"):
        return HTTPProblem(
            413,
            "too_many_keys",
            f"a batch sets at most {MAX_BATCH_KEYS} keys ({text}); split it into several",
        )
    if "$.retention" in text:
        return HTTPProblem(422, "bad_retention", f"bad retention: {text}")
    if "Number out of range" in text:
        return HTTPProblem(
            422,
            "non_finite_value",
            f"a number in the body is out of range ({text}); JSON values must be finite",
        )
    return HTTPProblem(422, "bad_body", f"the request body does not fit: {text}")


# A JSON string without escapes, and the colon after it when it names a field.
_PLAIN_STRING: Final = re.compile(rb'"([^"\\]*)"\s*(:?)')
# Any JSON string token (escapes included), and the colon after it when it names a field.
_STRING: Final = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"\s*(:?)')


def _field_names(raw: bytes) -> int:
    """How many field names the (valid JSON) text has, over all its objects."""
    colons = _STRING.findall(raw)
    return len(colons) - colons.count(b"")


class _Repeated(Exception):
    def __init__(self, name: str) -> None:
        self.name = name


def _no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise _Repeated(name)
            seen.add(name)
    return found


def _repeated_name(raw: bytes, body: object) -> str | None:
    """A field name some object of the (valid JSON) `raw` repeats, or None; `body` is what it
    decoded to.

    Decoding keeps one field per name. So a body that is exactly the compact encoding of what
    it decodes to repeats none (what msgspec, JSON.stringify and most clients send): first as
    the route decoded it (one encode, in C), then as plain JSON (a retention of 3600 decodes to
    3600.0). Else a body without escapes whose field names all differ, across all its
    objects, repeats none (one regex scan). Else the body repeats a name exactly when its
    decoded form, encoded again, has fewer field names than the body (two regex scans). Only
    when it does is the body parsed again in Python, to name the field.
    """
    if _encode_plain(body) == raw:
        return None
    plain = _encode_plain(_decode_plain(raw))
    if plain == raw:
        return None
    if b"\\" not in raw:
        names = _PLAIN_STRING.findall(raw)
        if len(names) < 64:
            named = [name for name, colon in names if colon]
            if len(named) == len(set(named)):
                return None
    if _field_names(raw) == _field_names(plain):
        return None
    try:
        json.loads(raw, object_pairs_hook=_no_repeats)
    except _Repeated as repeated:
        return repeated.name
    return "?"


_decode_plain = msgspec.json.Decoder().decode
_encode_plain = msgspec.json.Encoder().encode


def too_large(size: str, limit: int) -> HTTPProblem:
    return HTTPProblem(
        413,
        "body_too_large",
        f"the request body is {size}, over the limit of {limit}; split the write",
    )


def in_utc_calendar(name: str, moment: datetime, reason: str = "bad_query") -> datetime:
    """An aware time from a query (or a body), refused (422) unless it is within the UTC
    calendar: a time like 9999-12-31T23:59:59-01:00 is in the year 10000 in UTC."""
    try:
        moment.astimezone(UTC)
    except OverflowError:
        raise HTTPProblem(
            422,
            reason,
            f"{name} {moment.isoformat()} is outside the UTC calendar (years 1 to 9999 in UTC)",
        ) from None
    return moment


def query_time(name: str, text: str, *, assume_utc: bool = False) -> datetime:
    """A time a query names in ISO 8601, refused (422) unless it parses, names its time zone
    (or, with `assume_utc`, is read as UTC without one) and lies within the UTC calendar."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise HTTPProblem(
            422,
            "bad_query",
            f"{name} must be an ISO time like 2026-01-01T00:00:00Z, got {text!r}",
        ) from None
    if moment.tzinfo is None:
        if not assume_utc:
            raise HTTPProblem(422, "bad_query", f"{name} must name its time zone, e.g. a final Z")
        moment = moment.replace(tzinfo=UTC)
    return in_utc_calendar(name, moment)
