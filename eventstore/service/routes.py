"""The route table: every operation of the HTTP API, its auth action, parameters and bodies.

`OPERATIONS` drives both the Starlette routes (`app.py`) and the OpenAPI document
(`openapi.py`), so the two cannot drift apart. Each operation's handler gets a `Call`: the
request, the verified claims, and the scope the path names, already authorized.

Expected versions travel in `If-Match` (`If-Match: "7"` or `If-Match: 7`: write only if the
scope is at version 7, else 409); writes answer with the scope's new version in `ETag`.
Idempotency ids travel in `Idempotency-Key`.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal
from urllib.parse import unquote

import anyio.lowlevel
import anyio.to_thread
import msgspec
from msgspec import UNSET, UnsetType
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Send
from starlette.types import Scope as ASGIScope

from eventstore.log.append import AppendResult
from eventstore.log.backends.base import CurrentRow
from eventstore.log.config import NEVER_EXPIRE, NeverExpire
from eventstore.log.crypto import ERASED, MASKED, is_sensitive
from eventstore.log.errors import ConcurrencyError
from eventstore.log.events import from_micros
from eventstore.log.scopes import AssetScope, Scope, TaskScope
from eventstore.log.values import MAX_VALUE_DEPTH, check_key
from eventstore.service.auth import (
    Action,
    Claims,
    TokenError,
    TokenVerifier,
    authorize,
    sees_sensitive,
)
from eventstore.service.errors import ErrorBody, HTTPProblem, problem_of
from eventstore.service.metrics import Metrics
from eventstore.service.models import (
    MAX_BATCH_KEYS,
    MAX_RETENTION_SECONDS,
    AssetBatchBody,
    AssetPutBody,
    BatchBody,
    KeyEntry,
    KeyList,
    PatchBody,
    PutBody,
    TaskPutBody,
    WriteResult,
)
from eventstore.store import AssetStore, Store, TaskStore

__all__ = ["OPERATIONS", "Call", "Operation", "Param", "ServiceState", "endpoint"]

log = logging.getLogger("tasktrail.service")

ScopeKind = Literal["task", "asset_name", "asset_uri"]

MAX_MAP_INDEX: Final = 2**31 - 1
MAX_LIST_LIMIT: Final = 1000


class ScopeCache:
    """Scopes as `scope_of` parses them, by the path segments and query parameter that name them.

    A task writes to its own scope over and over; unescaping and checking each part again on
    every request costs more than the rest of its routing.
    """

    def __init__(self, size: int = 4096) -> None:
        self._scopes: dict[tuple[object, ...], Scope] = {}
        self._size = size

    def scope(self, kind: ScopeKind, request: Request) -> Scope:
        params = request.path_params
        if kind == "task":
            named: tuple[object, ...] = (
                params["dag_id"],
                params["run_id"],
                params["task_id"],
                params["map_index"],
            )
        else:
            # By the uri alone, not the whole query: history's filters and pages vary with it.
            named = (kind, params.get("name"), request.query_params.get("uri"))
        scope = self._scopes.get(named)
        if scope is None:
            scope = scope_of(kind, request)
            if len(self._scopes) >= self._size:
                self._scopes.clear()
            self._scopes[named] = scope
        return scope


@dataclass
class ServiceState:
    """What every request reaches: the open store, the token verifier, the metrics."""

    store: Store
    verifier: TokenVerifier
    metrics: Metrics = field(default_factory=Metrics)
    scopes: ScopeCache = field(default_factory=ScopeCache)
    max_body_bytes: int = 16 * 1024 * 1024
    wall: Callable[[], float] = time.time


@dataclass(frozen=True)
class Param:
    name: str
    location: Literal["path", "query", "header"]
    schema: dict[str, Any]
    description: str
    required: bool = False


Handler = Callable[["Call"], Awaitable[Response]]


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # Starlette's form, with convertors: {key:path}, {map_index:mapindex}
    name: str
    summary: str
    handler: Handler
    tag: str
    action: Action | None = None  # None: no token needed
    scope: ScopeKind | None = None
    body: type | None = None
    response: type | None = None
    params: tuple[Param, ...] = ()
    statuses: tuple[int, ...] = ()
    media_type: str = "application/json"

    @property
    def template(self) -> str:
        """The path as OpenAPI writes it: {key}, {map_index}."""
        return self.path.replace(":path}", "}").replace(":mapindex}", "}")


class Call:
    """One authorized request to one operation."""

    __slots__ = ("claims", "headers", "op", "request", "scope", "state")

    def __init__(
        self,
        request: Request,
        headers: dict[bytes, bytes],
        state: ServiceState,
        op: Operation,
        claims: Claims | None,
        scope: Scope | None,
    ) -> None:
        self.request = request
        self.headers = headers
        self.state = state
        self.op = op
        self.claims = claims
        self.scope = scope

    @property
    def store(self) -> Store:
        return self.state.store

    def the_scope(self) -> Scope:
        assert self.scope is not None, self.op.name
        return self.scope

    def accessor(self) -> TaskStore | AssetStore:
        claims = self.claims
        assert claims is not None
        scope = self.the_scope()
        if isinstance(scope, TaskScope):
            return TaskStore(self.store, scope, self.try_number(), claims.actor)
        return AssetStore(self.store, scope, None, claims.actor)

    def try_number(self) -> int | None:
        """The try a task write is stamped with: a task token's own; an admin's says it.

        An admin token serves many task instances (Airflow's API server holds one), so it
        names the try of each write in `Tasktrail-Try`; without the header it writes no try.
        """
        claims = self.claims
        assert claims is not None
        said = self.header("tasktrail-try")
        if claims.role == "admin" and said is not None and said.isascii() and said.isdigit():
            return int(said)
        return claims.try_number

    def key(self) -> str:
        return check_key(self.request.path_params["key"])

    def header(self, name: str) -> str | None:
        """A request header by its lower-case name."""
        return _header(self.headers, name.encode("latin-1"))

    async def body(self, kind: type[Any]) -> Any:
        limit = self.state.max_body_bytes
        declared = self.header("content-length") or ""
        # A declared length over the limit is refused before reading; a lying one once the
        # body read passes the limit.
        if declared.isascii() and declared.isdigit() and int(declared) > limit:
            raise _too_large(f"{int(declared)} bytes", limit)
        raw = await _read_body(self.request.receive, limit)
        if len(raw) <= _INLINE_BODY_BYTES:
            return decode_body(raw, kind)
        # Decoding many megabytes takes longer than any request may hold the event loop; in a
        # worker thread the loop gets its turns between the steps of the decoding.
        return await anyio.to_thread.run_sync(decode_body, raw, kind)

    def expected_version(self) -> int | None:
        header = self.header("if-match")
        if header is None:
            return None
        text = header.strip().removeprefix("W/").strip('"')
        if not (text.isascii() and text.isdigit()) or len(text) > 18:
            raise HTTPProblem(
                422,
                "bad_header",
                f'If-Match must be a scope version like "7", got {header!r}',
            )
        return int(text)

    def idempotency_id(self) -> str | None:
        header = self.header("idempotency-key")
        if header is not None and not 0 < len(header) <= 200:
            raise HTTPProblem(422, "bad_header", "Idempotency-Key must be 1 to 200 characters")
        return header

    def query_int(self, name: str, default: int | None, low: int, high: int) -> int | None:
        text = self.request.query_params.get(name)
        if text is None:
            return default
        try:
            number = int(text)
        except ValueError:
            raise HTTPProblem(
                422, "bad_query", f"{name} must be an integer, got {text!r}"
            ) from None
        if not low <= number <= high:
            raise HTTPProblem(
                422, "bad_query", f"{name} must be between {low} and {high}, got {number}"
            )
        return number

    def query_bool(self, name: str) -> bool:
        text = self.request.query_params.get(name, "false").lower()
        if text in ("true", "1", "yes"):
            return True
        if text in ("false", "0", "no"):
            return False
        raise HTTPProblem(422, "bad_query", f"{name} must be true or false, got {text!r}")


# ----------------------------------------------------------------------------- responses


def _enc_hook(value: object) -> object:
    if value is ERASED:
        return "<erased>"  # a value erased with its scope, in a state or diff
    if value is MASKED:
        return "<masked>"  # a sensitive value the bearer may not see, in a state or diff
    raise NotImplementedError(f"cannot encode {type(value).__name__}")


_encoder = msgspec.json.Encoder(enc_hook=_enc_hook)


def json_response(
    data: object, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(_encoder.encode(data), status, headers, media_type="application/json")


def problem_response(problem: HTTPProblem) -> Response:
    body = ErrorBody(reason=problem.reason, message=problem.message, detail=problem.detail)
    headers = {"WWW-Authenticate": "Bearer"} if problem.status == 401 else None
    return json_response(body, problem.status, headers)


def _write_response(call: Call, result: AppendResult) -> Response:
    kind = "task" if isinstance(call.scope, TaskScope) else "asset"
    call.state.metrics.append(kind, "ok", result.events)
    body = WriteResult(
        version=result.version,
        seq=result.seq,
        events=result.events,
        recorded_at=result.recorded_at,
    )
    return json_response(body, headers={"ETag": f'"{result.version}"'})


def _entry(call: Call, row: CurrentRow) -> KeyEntry | None:
    """The entry of a projection row as the bearer may see it; None if it was erased."""
    scope = call.the_scope()
    sensitive = is_sensitive(row.value)
    if sensitive and not sees_sensitive(call.claims, scope):
        value: msgspec.Raw | None = msgspec.Raw(b"null")
    else:
        encoded = call.store.open_json(scope, row)
        value = None if encoded is None else msgspec.Raw(encoded)
    if value is None:
        return None
    return KeyEntry(
        key=row.key,
        value=value,
        updated_at=from_micros(row.updated_at),
        expires_at=None if row.expires_at is None else from_micros(row.expires_at),
        sensitive=sensitive,
    )


def _flag(sensitive: bool | UnsetType) -> bool | None:
    """A body's `sensitive`: said (True, False) or not (None: the key keeps its flag)."""
    return None if sensitive is UNSET else bool(sensitive)


def _retention(value: str | float) -> timedelta | NeverExpire | None:
    if value == "default":
        return None
    if value == "never":
        return NEVER_EXPIRE
    assert isinstance(value, float)
    if not (math.isfinite(value) and 1e-6 <= value <= MAX_RETENTION_SECONDS):
        raise HTTPProblem(
            422,
            "bad_retention",
            f"retention must be a number of seconds from 1e-6 to {MAX_RETENTION_SECONDS:.0f} "
            f'(100 years), got {value}; use "never" for values kept until deleted',
        )
    return timedelta(seconds=value)


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


def unknown_scope(scope: Scope) -> HTTPProblem:
    what = "dag, run, task and map index" if isinstance(scope, TaskScope) else "asset name and uri"
    return HTTPProblem(
        404, "unknown_scope", f"nothing was ever written to {scope}; check the {what}"
    )


async def _not_found(call: Call, key: str) -> HTTPProblem:
    scope = call.the_scope()
    if await call.store.scope_id(scope) is None:
        return unknown_scope(scope)
    return HTTPProblem(404, "unknown_key", f"{scope} has no live key {key!r}")


# ----------------------------------------------------------------------------- handlers


async def get_key(call: Call) -> Response:
    key = call.key()
    row = await call.store.read(call.the_scope(), key)
    entry = None if row is None else _entry(call, row)
    if entry is None:
        raise await _not_found(call, key)
    return json_response(entry)


async def put_key(call: Call) -> Response:
    key = call.key()
    accessor = call.accessor()
    expected, idempotency = call.expected_version(), call.idempotency_id()
    if isinstance(accessor, TaskStore):
        body: PutBody = await call.body(PutBody)
        expires_at = None if body.expires_at is UNSET else body.expires_at
        if body.retention is UNSET:
            retention = None
        elif expires_at is not None:
            raise HTTPProblem(422, "bad_retention", "pass retention or expires_at, not both")
        else:
            retention = _retention(body.retention)
        result = await accessor.set(
            key,
            body.value,
            retention=retention,
            expires_at=expires_at,
            expected_version=expected,
            idempotency_id=idempotency,
            sensitive=_flag(body.sensitive),
        )
    else:
        asset_body: AssetPutBody = await call.body(AssetPutBody)
        result = await accessor.set(
            key,
            asset_body.value,
            expected_version=expected,
            idempotency_id=idempotency,
            sensitive=_flag(asset_body.sensitive),
        )
    return _write_response(call, result)


async def patch_key(call: Call) -> Response:
    """Set a new value under the key's current expiry.

    The expiry is read, then the write is made with the version the read saw, so a write in
    between (which might have changed the expiry) makes this one retry with the new expiry
    instead of overwriting it with a stale one.
    """
    key = call.key()
    body: PatchBody = await call.body(PatchBody)
    accessor = call.accessor()
    scope = call.the_scope()
    expected, idempotency = call.expected_version(), call.idempotency_id()
    for _ in range(8):
        version = await call.store.version(scope)
        row = await call.store.read(scope, key)
        if row is None:
            raise await _not_found(call, key)
        try:
            if isinstance(accessor, TaskStore):
                result = await accessor.set(
                    key,
                    body.value,
                    retention=NEVER_EXPIRE if row.expires_at is None else None,
                    expires_at=None if row.expires_at is None else from_micros(row.expires_at),
                    expected_version=version if expected is None else expected,
                    idempotency_id=idempotency,
                    sensitive=_flag(body.sensitive),
                )
            else:
                result = await accessor.set(
                    key,
                    body.value,
                    expected_version=version if expected is None else expected,
                    idempotency_id=idempotency,
                    sensitive=_flag(body.sensitive),
                )
        except ConcurrencyError:
            if expected is not None:
                raise
            continue
        return _write_response(call, result)
    raise HTTPProblem(
        503, "busy", f"{scope} changed under every attempt to patch {key!r}; try again"
    )


async def delete_key(call: Call) -> Response:
    result = await call.accessor().delete(
        call.key(), expected_version=call.expected_version(), idempotency_id=call.idempotency_id()
    )
    return _write_response(call, result)


async def list_keys(call: Call) -> Response:
    limit = call.query_int("limit", 100, 0, MAX_LIST_LIMIT)
    assert limit is not None
    after = call.request.query_params.get("after")
    scope = call.the_scope()
    # The version first: if a write lands between the two reads, the version is the older one
    # and a write conditioned on it fails rather than succeeding on a view it did not see.
    version = await call.store.version(scope)
    # By keyset: the rows after `after`, one more than the page to know whether there is a next.
    rows = await call.store.read_page(scope, after=after, limit=limit + 1) if limit else []
    page = rows[:limit]
    more = len(rows) > limit and bool(page)
    entries = []
    for i, row in enumerate(page, 1):
        entries.append(_entry(call, row))
        if i % 250 == 0:  # a long page is made in slices: the event loop turns between them
            await anyio.lowlevel.checkpoint()
    body = KeyList(
        items=[e for e in entries if e is not None],
        next=page[-1].key if more else None,
        version=version,
    )
    return json_response(body, headers={"ETag": f'"{version}"'})


async def clear_scope(call: Call) -> Response:
    accessor = call.accessor()
    expected, idempotency = call.expected_version(), call.idempotency_id()
    if isinstance(accessor, TaskStore):
        result = await accessor.clear(
            call.query_bool("all_map_indices"),
            expected_version=expected,
            idempotency_id=idempotency,
        )
    else:
        result = await accessor.clear(expected_version=expected, idempotency_id=idempotency)
    return _write_response(call, result)


async def set_batch(call: Call) -> Response:
    accessor = call.accessor()
    expected, idempotency = call.expected_version(), call.idempotency_id()
    if isinstance(accessor, TaskStore):
        body: BatchBody = await call.body(BatchBody)
        result = await accessor.set_many(
            body.values,
            retention=_retention(body.retention),
            expected_version=expected,
            idempotency_id=idempotency,
            sensitive=_flag(body.sensitive),
        )
    else:
        asset_body: AssetBatchBody = await call.body(AssetBatchBody)
        result = await accessor.set_many(
            asset_body.values,
            expected_version=expected,
            idempotency_id=idempotency,
            sensitive=_flag(asset_body.sensitive),
        )
    return _write_response(call, result)


async def erase_scope(call: Call) -> Response:
    """Crypto-shredding: destroy the scope's data keys and its values; admins only."""
    scope = call.the_scope()
    if await call.store.scope_id(scope) is None:
        raise unknown_scope(scope)
    return _write_response(call, await call.store.erase(scope))


# ----------------------------------------------------------------------------- scopes


def scope_of(kind: ScopeKind, request: Request) -> Scope:
    # The scope's own segments arrive still escaped (see `RawScopeSegments`).
    params = request.path_params
    try:
        match kind:
            case "task":
                map_index = params["map_index"]
                if map_index > MAX_MAP_INDEX:
                    raise ValueError(f"map_index must be from -1 to {MAX_MAP_INDEX}")
                dag, run, task = (unquote(params[n]) for n in ("dag_id", "run_id", "task_id"))
                return TaskScope(dag, run, task, map_index)
            case "asset_name":
                name = unquote(params["name"])
                return AssetScope(name=name, uri=request.query_params.get("uri"))
            case "asset_uri":
                uri = request.query_params.get("uri")
                if uri is None:
                    raise ValueError("the by-uri routes need ?uri=")
                return AssetScope(uri=uri)
    except ValueError as error:
        raise HTTPProblem(422, "bad_scope", str(error)) from None
    raise AssertionError(kind)


class RawScopeSegments:
    """ASGI middleware: the path segments that name a scope are matched still escaped.

    The server decodes `%2F` before routing, so an asset named `s3://bucket/orders` (Airflow
    names an asset by its uri unless told otherwise) would no longer be one path segment. For
    the scope's own segments (dag, run and task ids; an asset's name) this puts the escaped text
    from `raw_path` back into the path the router sees, and `scope_of` unescapes them. The rest
    of the path, a key with its `/`, is routed decoded as before.
    """

    PREFIXES: Final = (("/api/v1/tasks/", 3), ("/api/v1/assets/by-name/", 1))

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("raw_path"):
            path: str = scope["path"]
            for prefix, count in self.PREFIXES:
                if path.startswith(prefix):
                    scope = self._rewrite(scope, prefix, count)
                    break
        await self.app(scope, receive, send)

    @staticmethod
    def _rewrite(scope: ASGIScope, prefix: str, count: int) -> ASGIScope:
        raw = scope["raw_path"].decode("latin-1").partition("?")[0]
        if not raw.startswith(prefix):
            return scope
        segments = raw[len(prefix) :].split("/", count)
        if len(segments) <= count:
            tail = ""
            segments += [""] * (count - len(segments))
        else:
            tail = unquote("/" + segments[count])
        return {**scope, "path": prefix + "/".join(segments[:count]) + tail}


# ----------------------------------------------------------------------------- the wrapper


def endpoint(
    op: Operation, state_of: Callable[[Request], ServiceState]
) -> Callable[[Request], Awaitable[Response]]:
    """The Starlette endpoint of an operation: auth, scope, handler, errors, metrics."""

    async def run(request: Request) -> Response:
        state = state_of(request)
        started = time.perf_counter()
        headers = headers_of(request)
        try:
            if len(headers) != len(request.scope["headers"]):
                _check_repeats(request.scope["headers"])
            claims = None
            scope = None
            if op.action is not None:
                claims = _authenticate(
                    _header(headers, b"authorization"), state.verifier, state.wall()
                )
                if op.scope is not None:
                    scope = state.scopes.scope(op.scope, request)
                denial = authorize(claims, op.action, scope)
                if denial is not None:
                    raise HTTPProblem(403, "forbidden", denial)
                if op.action in _WRITES:
                    _check_try(_header(headers, b"tasktrail-try"), claims)
            response = await op.handler(Call(request, headers, state, op, claims, scope))
        except Exception as error:
            problem = problem_of(error)
            if problem is None:
                log.exception("%s %s failed", op.method, request.url.path)
                problem = HTTPProblem(
                    500, "internal_error", f"the service failed: {type(error).__name__}"
                )
            if op.action in ("write", "delete", "clear"):
                kind = "task" if op.scope == "task" else "asset"
                state.metrics.append(kind, problem.reason)
            response = problem_response(problem)
        state.metrics.request(
            op.template, op.method, response.status_code, time.perf_counter() - started
        )
        return response

    run.__name__ = op.name
    return run


_WRITES: Final = frozenset({"write", "delete", "clear"})


def headers_of(request: Request) -> dict[bytes, bytes]:
    """The request's raw headers by (lower-case) name, the last of a repeated one: made once,
    where Starlette's `Headers` scans the whole list again on every lookup."""
    return dict(request.scope["headers"])


# The headers the service reads: sent twice, which one counts would be a guess (an intermediary
# may keep the first where this service would keep the last).
_SINGLE_HEADERS: Final = (b"authorization", b"tasktrail-try", b"if-match", b"idempotency-key")


def _check_repeats(raw: list[tuple[bytes, bytes]]) -> None:
    names = [name for name, _ in raw]
    for name in _SINGLE_HEADERS:
        if names.count(name) > 1:
            raise HTTPProblem(
                400,
                "repeated_header",
                f"the request has {names.count(name)} {name.decode().title()} headers; "
                "send it once",
            )


def _header(headers: dict[bytes, bytes], name: bytes) -> str | None:
    value = headers.get(name)
    return None if value is None else value.decode("latin-1")


async def _read_body(receive: Receive, limit: int) -> bytes:
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
                raise _too_large(f"over {limit} bytes", limit)
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


# Bodies up to this size are decoded on the event loop (about a millisecond at most).
_INLINE_BODY_BYTES: Final = 64 * 1024


def decode_body(raw: bytes, kind: type[Any]) -> Any:
    """The body decoded as `kind`, or the 4xx that says what is wrong with it.

    msgspec keeps the last of an object's repeated fields, so `{"sensitive": true,
    "sensitive": false}` would quietly mean false: a second, strict pass refuses any object of
    the body (the body's own fields, a batch's keys, a value's dicts) that names a field twice.
    """
    try:
        body = msgspec.json.decode(raw, type=kind)
        repeated = _repeated_name(raw)
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


def _repeated_name(raw: bytes) -> str | None:
    """A field name some object of the (valid JSON) body repeats, or None.

    A body without escapes whose field names all differ, across all its objects, repeats none
    (the usual small body: one regex scan). Else: decoding keeps one field per name, so the body
    repeats a name exactly when its decoded form, encoded again, has fewer field names than the
    body (a decode, an encode and two regex scans, all in C). Only when it does is the body
    parsed again in Python, to name the field.
    """
    if b"\\" not in raw:
        names = _PLAIN_STRING.findall(raw)
        if len(names) < 64:
            named = [name for name, colon in names if colon]
            if len(named) == len(set(named)):
                return None
    if _field_names(raw) == _field_names(_encode_plain(_decode_plain(raw))):
        return None
    try:
        json.loads(raw, object_pairs_hook=_no_repeats)
    except _Repeated as repeated:
        return repeated.name
    return "?"


_decode_plain = msgspec.json.Decoder().decode
_encode_plain = msgspec.json.Encoder().encode


def _too_large(size: str, limit: int) -> HTTPProblem:
    return HTTPProblem(
        413,
        "body_too_large",
        f"the request body is {size}, over the limit of {limit}; split the write",
    )


def _check_try(said: str | None, claims: Claims) -> None:
    """A task that says which try it is (`Tasktrail-Try`) must hold that try's token.

    Writes are stamped with the token's try; a task running try 2 with try 1's token would
    write as try 1, unfenced against its own zombie. Saying the try turns that into a 403.
    """
    if said is None:
        return
    if not (said.isascii() and said.isdigit() and len(said) <= 9):
        raise HTTPProblem(422, "bad_header", f"Tasktrail-Try must be a try number, got {said!r}")
    if claims.role != "task":
        return
    if int(said) != claims.try_number:
        raise HTTPProblem(
            403,
            "try_mismatch",
            f"the request says try {said}, the token is for try {claims.try_number}; "
            "make a token for this try with `tasktrail token --try`",
        )


def _authenticate(header: str | None, verifier: TokenVerifier, now: float) -> Claims:
    if header is None:
        raise HTTPProblem(
            401, "unauthenticated", "send a bearer token: Authorization: Bearer <token>"
        )
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise HTTPProblem(401, "unauthenticated", "the Authorization header must be Bearer <token>")
    try:
        return verifier.verify(token.strip(), now)
    except TokenError as error:
        raise HTTPProblem(401, "bad_token", str(error)) from None


# ----------------------------------------------------------------------------- the table


def _str_schema(**extra: Any) -> dict[str, Any]:
    return {"type": "string", "minLength": 1, **extra}


_TASK_PARAMS: Final = (
    Param("dag_id", "path", _str_schema(), "the DAG id (escaped: / as %2F)", True),
    Param("run_id", "path", _str_schema(), "the run id (escaped: / as %2F)", True),
    Param("task_id", "path", _str_schema(), "the task id (escaped: / as %2F)", True),
    Param(
        "map_index",
        "path",
        {"type": "integer", "minimum": -1, "maximum": MAX_MAP_INDEX},
        "the map index, -1 for an unmapped task",
        True,
    ),
)
_NAME_PARAMS: Final = (
    Param("name", "path", _str_schema(), "the asset's name (escaped: / as %2F)", True),
    Param("uri", "query", _str_schema(), "the asset's uri, when it has both a name and a uri"),
)
_URI_PARAMS: Final = (Param("uri", "query", _str_schema(), "the asset's uri", True),)
_KEY: Final = Param(
    "key", "path", _str_schema(maxLength=512), "the key; a / in it is sent as %2F", True
)
_IF_MATCH: Final = Param(
    "If-Match",
    "header",
    {"type": "string", "pattern": '^"?[0-9]{1,18}"?$'},
    'write only if the scope is at this version (e.g. "7"), else 409',
)
_TRY: Final = Param(
    "Tasktrail-Try",
    "header",
    {"type": "string", "pattern": "^[0-9]{1,9}$"},
    "the try the caller runs; with a task token for another try the write is refused (403); "
    "an admin token's write is stamped with this try",
)
_IDEMPOTENCY: Final = Param(
    "Idempotency-Key",
    "header",
    {"type": "string", "minLength": 1, "maxLength": 200},
    "a retried write with the same key returns the first result and appends nothing",
)

_AUTH: Final = (401, 403, 404, 422)
_WRITE: Final = (*_AUTH, 409, 410, 413, 503)


def scope_params(kind: ScopeKind) -> tuple[Param, ...]:
    return {"task": _TASK_PARAMS, "asset_name": _NAME_PARAMS, "asset_uri": _URI_PARAMS}[kind]


def suffix_of(kind: ScopeKind) -> str:
    return {"task": "task", "asset_name": "asset_by_name", "asset_uri": "asset_by_uri"}[kind]


def _store_operations(
    prefix: str, kind: ScopeKind, scope_params: tuple[Param, ...]
) -> list[Operation]:
    what = "task instance" if kind == "task" else "asset"
    tag = "task store" if kind == "task" else "asset store"
    suffix = suffix_of(kind)
    store, item, batch = f"{prefix}/store", f"{prefix}/store/{{key:path}}", f"{prefix}/store:batch"
    write_params: tuple[Param, ...] = (_IF_MATCH, _IDEMPOTENCY, _TRY)
    clear_params = write_params
    if kind == "task":
        clear_params = (
            Param(
                "all_map_indices",
                "query",
                {"type": "boolean"},
                "clear every map index of the task in one atomic step",
            ),
            *write_params,
        )

    def op(
        method: str,
        path: str,
        name: str,
        summary: str,
        handler: Handler,
        action: Action,
        params: tuple[Param, ...],
        statuses: tuple[int, ...],
        body: type | None = None,
    ) -> Operation:
        return Operation(
            method,
            path,
            f"{name}_{suffix}",
            summary,
            handler,
            tag,
            action=action,
            scope=kind,
            body=body,
            response=KeyList if name == "list" else KeyEntry if name == "get" else WriteResult,
            params=params,
            statuses=statuses,
        )

    page_params = (
        Param(
            "limit",
            "query",
            {"type": "integer", "minimum": 0, "maximum": MAX_LIST_LIMIT},
            "most keys on a page (default 100; 0 answers only the version)",
        ),
        Param("after", "query", {"type": "string"}, "the `next` of the previous page"),
    )
    # TaskPutBody is PutBody annotated with what its schema adds (retention or expires_at).
    put_body: Any = TaskPutBody if kind == "task" else AssetPutBody
    batch_body = BatchBody if kind == "task" else AssetBatchBody
    one = (*scope_params, _KEY)
    return [
        op(
            "GET",
            store,
            "list",
            f"List the live keys of the {what}, ordered by key",
            list_keys,
            "read",
            (*scope_params, *page_params),
            _AUTH,
        ),
        op(
            "DELETE",
            store,
            "clear",
            f"Remove every key of the {what}",
            clear_scope,
            "clear",
            (*scope_params, *clear_params),
            _WRITE,
        ),
        op(
            "POST",
            batch,
            "set_many",
            f"Set several keys of the {what} in one atomic step",
            set_batch,
            "write",
            (*scope_params, *write_params),
            _WRITE,
            batch_body,
        ),
        op(
            "POST",
            f"{prefix}/store:erase",
            "erase",
            f"Erase the {what} (admins): destroy its data keys and its values at once; its "
            "history keeps the metadata, every earlier value reads as erased",
            erase_scope,
            "erase",
            scope_params,
            _AUTH,
        ),
        op("GET", item, "get", "Read one key", get_key, "read", one, _AUTH),
        op(
            "PUT",
            item,
            "set",
            "Set one key",
            put_key,
            "write",
            (*one, *write_params),
            _WRITE,
            put_body,
        ),
        op(
            "PATCH",
            item,
            "patch",
            "Change a key's value and keep its expiry",
            patch_key,
            "write",
            (*one, *write_params),
            _WRITE,
            PatchBody,
        ),
        op(
            "DELETE",
            item,
            "delete",
            "Delete one key; deleting an absent key changes nothing",
            delete_key,
            "delete",
            (*one, *write_params),
            _WRITE,
        ),
    ]


TASK_PREFIX: Final = "/api/v1/tasks/{dag_id}/{run_id}/{task_id}/{map_index:mapindex}"
ASSET_NAME_PREFIX: Final = "/api/v1/assets/by-name/{name}"
ASSET_URI_PREFIX: Final = "/api/v1/assets/by-uri"

OPERATIONS: list[Operation] = [
    *_store_operations(TASK_PREFIX, "task", _TASK_PARAMS),
    *_store_operations(ASSET_NAME_PREFIX, "asset_name", _NAME_PARAMS),
    *_store_operations(ASSET_URI_PREFIX, "asset_uri", _URI_PARAMS),
]
