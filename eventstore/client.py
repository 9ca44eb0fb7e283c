"""The store's accessor API over HTTP, for task code on other machines.

    async with connect("http://127.0.0.1:8750", token=token) as remote:
        ts = remote.task_store("my_dag", "run_1", "ingest")
        await ts.set("job_id", "spark-123")
        await ts.get("job_id")

Every write carries an idempotency id (made here unless given), so a write whose response is
lost is retried without being recorded twice. Connection errors and 5xx answers are retried
with exponential backoff, a bounded number of times. Errors come back as the exception classes
the embedded store raises (ConcurrencyError, StaleAttemptError, NoneValueError, …); auth and
other service answers raise `ServiceError` subclasses. Values and keys are checked here first,
with the same errors, so a bad value never leaves the process.

`connect_blocking` gives the same API as plain calls for sync code. Needs the `service` extra.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Final, TypeVar
from urllib.parse import quote, urlencode

import msgspec
from anyio.abc import AsyncResource
from anyio.from_thread import BlockingPortal, start_blocking_portal

try:
    import aiohttp
    from yarl import URL
except ImportError as e:
    raise ImportError(
        f"eventstore.client needs the service extra ({e.name} is missing): "
        "pip install 'tasktrail[service]'"
    ) from e

from eventstore._opening import Opening
from eventstore.blocking import BlockingAccessor
from eventstore.feed import ScopeMatch
from eventstore.log.append import AppendResult
from eventstore.log.config import NEVER_EXPIRE, NeverExpire, check_retention
from eventstore.log.errors import EventStoreError, NoSuchPointError
from eventstore.log.events import RecordedEvent
from eventstore.log.scopes import AssetScope, Scope, TaskScope
from eventstore.log.values import check_key, decode_value, encode_value
from eventstore.service.errors import ERRORS
from eventstore.service.models import RewindAnswer
from projections import At, Diff, RewindResult, TrySummary

__all__ = [
    "AuthenticationError",
    "BlockingRemote",
    "BlockingRemoteHistory",
    "PermissionDeniedError",
    "Remote",
    "RemoteAssetStore",
    "RemoteEntry",
    "RemoteHistory",
    "RemoteSubscription",
    "RemoteTaskStore",
    "ServiceError",
    "ServiceUnavailableError",
    "connect",
    "connect_blocking",
    "new_idempotency_id",
]

T = TypeVar("T")

_RETRY_STATUSES: Final = frozenset({500, 502, 503, 504})


class ServiceError(EventStoreError):
    """An answer of the service that is not one of the store's own errors."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{message} (HTTP {status} {reason})")
        self.status = status
        self.reason = reason


class AuthenticationError(ServiceError):
    """401: the token is missing, malformed, badly signed or expired."""


class PermissionDeniedError(ServiceError):
    """403: the token's role or task instance does not allow this."""


class ServiceUnavailableError(ServiceError):
    """The service could not be reached, or kept failing, after every retry."""


class _ErrorBody(msgspec.Struct):
    reason: str = "unknown"
    message: str = ""
    detail: dict[str, Any] | None = None


# The service's error table read backwards: reason -> the most specific class with it.
_CLASSES: Final[dict[str, type[BaseException]]] = {}
for _kind, (_status, _reason, _fields) in ERRORS.items():
    _CLASSES.setdefault(_reason, _kind)

_decode_error = msgspec.json.Decoder(_ErrorBody).decode
_decode_result = msgspec.json.Decoder(AppendResult).decode
_encode = msgspec.json.Encoder().encode


class RemoteEntry(msgspec.Struct):
    """One live key as the service sends it: its JSON value undecoded, when it was set, when it
    expires (None: never)."""

    key: str
    value: msgspec.Raw
    updated_at: datetime
    expires_at: datetime | None = None


class _Page(msgspec.Struct):
    items: list[RemoteEntry]
    next: str | None
    version: int


_decode_entry = msgspec.json.Decoder(RemoteEntry).decode
_decode_page = msgspec.json.Decoder(_Page).decode


def _error_of(status: int, body: bytes, scope: Scope | None) -> BaseException:
    try:
        answer = _decode_error(body)
    except msgspec.DecodeError:
        answer = _ErrorBody("unknown", body[:200].decode(errors="replace"))
    kind = _CLASSES.get(answer.reason)
    if kind is not None:
        # The store's own class, message and attributes, as the embedded store would raise it.
        error = kind.__new__(kind)
        Exception.__init__(error, answer.message)
        for name, value in (answer.detail or {}).items():
            setattr(error, name, value)
        if scope is not None:
            error.scope = scope  # type: ignore[attr-defined]
        return error
    if status == 401:
        return AuthenticationError(status, answer.reason, answer.message)
    if status == 403:
        return PermissionDeniedError(status, answer.reason, answer.message)
    if status in _RETRY_STATUSES:
        return ServiceUnavailableError(status, answer.reason, answer.message)
    return ServiceError(status, answer.reason, answer.message)


def new_idempotency_id() -> str:
    """A fresh id for one write: the time in nanoseconds, this process's nonce, a counter.

    Ids that grow with time land at the end of the service's idempotency index, so the ids of
    one batch share a page there instead of dirtying a random page each. The nonce (random,
    made anew in a forked child) and the counter keep ids unique without a syscall per id.
    """
    return f"{time.time_ns():016x}{_id_nonce}{next(_id_counter):08x}"


def _new_id_nonce() -> None:
    global _id_nonce, _id_counter
    _id_nonce, _id_counter = os.urandom(8).hex(), itertools.count()


_id_nonce, _id_counter = "", itertools.count()
_new_id_nonce()
os.register_at_fork(after_in_child=_new_id_nonce)


def _segment(text: str) -> str:
    # Every character but unreserved ones is escaped, "/" and "." included, so a key like
    # "a/b" or ".." stays one path segment and no client or proxy normalizes it away.
    return quote(text, safe="").replace(".", "%2E")


class Remote(AsyncResource):
    """A connection to a tasktrail service; make accessors with task_store and asset_store."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        retries: int = 4,
        backoff: float = 0.05,
    ) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self.retries = retries
        self.backoff = backoff

    async def aclose(self) -> None:
        """Close the connections to the service; idempotent, from any task."""
        await self._session.close()

    def task_store(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        map_index: int = -1,
        try_number: int | None = None,
    ) -> RemoteTaskStore:
        """The store of one task instance.

        Writes are stamped with the token's try. Given a `try_number`, the client says it with
        every write: the service refuses writes whose task token is for another try, and stamps
        an admin token's writes with it.
        """
        return RemoteTaskStore(self, TaskScope(dag_id, run_id, task_id, map_index), try_number)

    def asset_store(self, name: str | None = None, uri: str | None = None) -> RemoteAssetStore:
        return RemoteAssetStore(self, AssetScope(name, uri), None)

    def history(self, scope: Scope) -> RemoteHistory:
        """The history of a task or asset scope, read through the service."""
        return RemoteHistory(self, scope)

    def subscribe(
        self, after_seq: int = 0, scope: Scope | ScopeMatch | None = None
    ) -> RemoteSubscription:
        """`store.subscribe` through the service (GET /api/v1/events, Server-Sent Events):
        every event after `after_seq`, then each new one; reconnects by itself, resuming after
        the last position it got (Last-Event-ID). Close it with `aclose()` or `async with`."""
        return RemoteSubscription(self, after_seq, scope)

    async def health(self) -> dict[str, Any]:
        _, body = await self.request("GET", "/healthz")
        result: dict[str, Any] = msgspec.json.decode(body)
        return result

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        scope: Scope | None = None,
        ok: frozenset[int] = frozenset({200}),
    ) -> tuple[int, bytes]:
        """Send a request (path already escaped), retrying connection errors and 5xx answers.

        Answers with a status in `ok` are returned; every other raises its error.
        """
        text = self._base + path
        if query:
            text += "?" + urlencode(query)
        url = URL(text, encoded=True)
        send_headers = dict(headers or {})
        if body is not None:
            send_headers["Content-Type"] = "application/json"
        attempt = 0
        while True:
            try:
                async with self._session.request(
                    method, url, data=body, headers=send_headers
                ) as response:
                    status = response.status
                    content = await response.read()
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as e:
                if attempt >= self.retries:
                    raise ServiceUnavailableError(
                        0,
                        "unreachable",
                        f"{method} {self._base} failed after {attempt + 1} attempts: {e!r}",
                    ) from e
            else:
                if status in ok:
                    return status, content
                if status not in _RETRY_STATUSES or attempt >= self.retries:
                    raise _error_of(status, content, scope)
            await asyncio.sleep(min(2.0, self.backoff * 2**attempt) * (0.5 + random.random()))
            attempt += 1


def _scope_path(scope: Scope) -> tuple[str, dict[str, str]]:
    """The escaped path prefix of a scope's routes, and the query naming it (asset uris)."""
    if isinstance(scope, TaskScope):
        parts = [_segment(scope.dag_id), _segment(scope.run_id), _segment(scope.task_id)]
        return "/api/v1/tasks/" + "/".join([*parts, str(scope.map_index)]), {}
    if scope.name is not None:
        query = {} if scope.uri is None else {"uri": scope.uri}
        return f"/api/v1/assets/by-name/{_segment(scope.name)}", query
    assert scope.uri is not None
    return "/api/v1/assets/by-uri", {"uri": scope.uri}


class _RemoteAccessor:
    """Reads and writes of one scope through the service."""

    def __init__(self, remote: Remote, scope: Scope, try_number: int | None) -> None:
        self.remote = remote
        self.scope = scope
        self.try_number = try_number
        self._prefix, self._query = _scope_path(scope)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.scope}>"

    async def _call(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        ok: frozenset[int] = frozenset({200}),
    ) -> tuple[int, bytes]:
        merged = {**self._query, **(query or {})}
        return await self.remote.request(
            method,
            self._prefix + path,
            query=merged,
            body=body,
            headers=headers,
            scope=self.scope,
            ok=ok,
        )

    async def _write(
        self,
        method: str,
        path: str,
        body: bytes | None,
        expected_version: int | None,
        idempotency_id: str | None,
        query: Mapping[str, str] | None = None,
    ) -> AppendResult:
        headers = {"Idempotency-Key": idempotency_id or new_idempotency_id()}
        if self.try_number is not None:
            headers["Tasktrail-Try"] = str(self.try_number)
        if expected_version is not None:
            headers["If-Match"] = f'"{expected_version}"'
        _, content = await self._call(method, path, query=query, body=body, headers=headers)
        return _decode_result(content)

    async def get(self, key: str, default: Any = None) -> Any:
        """The key's current value, or `default` if it is absent or expired."""
        entry = await self.entry(key)
        return default if entry is None else decode_value(entry.value)

    async def entry(self, key: str) -> RemoteEntry | None:
        """The key's live entry (its JSON value as sent back, when it was set, when it expires),
        or None if it is absent or expired."""
        path = "/store/" + _segment(check_key(key))
        status, content = await self._call("GET", path, ok=frozenset({200, 404}))
        if status == 404:
            reason = _decode_error(content).reason
            if reason in ("unknown_key", "unknown_scope"):
                return None
            raise _error_of(status, content, self.scope)
        return _decode_entry(content)

    async def items(self) -> dict[str, Any]:
        """Every current {key: value} of the scope, fetched page by page."""
        result: dict[str, Any] = {}
        query = {"limit": "1000"}
        while True:
            _, content = await self._call("GET", "/store", query=query)
            page = _decode_page(content)
            for entry in page.items:
                result[entry.key] = decode_value(entry.value)
            if page.next is None:
                return result
            query = {"limit": "1000", "after": page.next}

    async def version(self) -> int:
        _, content = await self._call("GET", "/store", query={"limit": "0"})
        return _decode_page(content).version

    async def delete(
        self, key: str, *, expected_version: int | None = None, idempotency_id: str | None = None
    ) -> AppendResult:
        """Remove a key; a key that is absent already is left as it is."""
        path = "/store/" + _segment(check_key(key))
        return await self._write("DELETE", path, None, expected_version, idempotency_id)

    async def patch(
        self,
        key: str,
        value: object,
        *,
        expected_version: int | None = None,
        idempotency_id: str | None = None,
        sensitive: bool | None = None,
    ) -> AppendResult:
        """Change a live key's value and keep its expiry (and its sensitive flag, unless
        `sensitive` says otherwise)."""
        body = b'{"value":' + encode_value(check_key(key), value, 0) + _closing(sensitive)
        path = "/store/" + _segment(key)
        return await self._write("PATCH", path, body, expected_version, idempotency_id)

    async def _set_many(
        self,
        values: Mapping[str, object],
        retention: bytes | None,
        expected_version: int | None,
        idempotency_id: str | None,
        sensitive: bool | None = None,
    ) -> AppendResult:
        if not isinstance(values, Mapping):
            raise TypeError(
                f"set_many takes a mapping of key to value, got {type(values).__name__}"
            )
        parts = [
            _encode(check_key(key)) + b":" + encode_value(key, value, 0)
            for key, value in values.items()
        ]
        body = b'{"values":{' + b",".join(parts) + b"}"
        body += b"" if retention is None else b',"retention":' + retention
        body += _closing(sensitive)
        return await self._write("POST", "/store:batch", body, expected_version, idempotency_id)

    # The embedded store's async-accessor aliases, so Airflow-style code runs unchanged.
    async def aget(self, key: str, default: Any = None) -> Any:
        return await self.get(key, default)

    async def adelete(self, key: str, **options: Any) -> AppendResult:
        return await self.delete(key, **options)


def _closing(sensitive: bool | None) -> bytes:
    """The end of a write's body: `sensitive` only when the caller said it (None keeps the
    key's flag, on the service as in the library)."""
    if sensitive is None:
        return b"}"
    return b',"sensitive":true}' if sensitive else b',"sensitive":false}'


def _retention(retention: timedelta | NeverExpire | None) -> bytes:
    check_retention(retention)
    if retention is None:
        return b'"default"'
    if retention is NEVER_EXPIRE:
        return b'"never"'
    assert isinstance(retention, timedelta)
    return _encode(retention.total_seconds())


class RemoteTaskStore(_RemoteAccessor):
    """A task instance's store through the service: the embedded TaskStore's methods."""

    scope: TaskScope

    async def set(
        self,
        key: str,
        value: object,
        *,
        retention: timedelta | NeverExpire | None = None,
        expires_at: datetime | None = None,
        expected_version: int | None = None,
        idempotency_id: str | None = None,
        sensitive: bool | None = None,
    ) -> AppendResult:
        """Store a JSON value under key; retention defaults to the store's configured days.

        `expires_at` (an aware datetime, kept exactly) sets the expiry instead of a retention.
        """
        body = b'{"value":' + encode_value(check_key(key), value, 0)
        if expires_at is None:
            body += b',"retention":' + _retention(retention)
        elif retention is not None:
            raise ValueError("pass retention or expires_at, not both")
        elif not isinstance(expires_at, datetime) or expires_at.tzinfo is None:
            raise TypeError(f"expires_at must be an aware datetime, got {expires_at!r}")
        else:
            body += b',"expires_at":' + _encode(expires_at)
        body += _closing(sensitive)
        path = "/store/" + _segment(key)
        return await self._write("PUT", path, body, expected_version, idempotency_id)

    async def set_many(
        self,
        values: Mapping[str, object],
        *,
        retention: timedelta | NeverExpire | None = None,
        expected_version: int | None = None,
        idempotency_id: str | None = None,
        sensitive: bool | None = None,
    ) -> AppendResult:
        """Store several keys in one atomic step, one version each."""
        return await self._set_many(
            values, _retention(retention), expected_version, idempotency_id, sensitive
        )

    async def clear(
        self,
        all_map_indices: bool = False,
        *,
        expected_version: int | None = None,
        idempotency_id: str | None = None,
    ) -> AppendResult:
        """Remove every key of this map index, or of every map index of the task at once."""
        query = {"all_map_indices": "true" if all_map_indices else "false"}
        return await self._write(
            "DELETE", "/store", None, expected_version, idempotency_id, query=query
        )

    async def aset(self, key: str, value: object, **options: Any) -> AppendResult:
        return await self.set(key, value, **options)

    async def aclear(self, all_map_indices: bool = False, **options: Any) -> AppendResult:
        return await self.clear(all_map_indices, **options)


class RemoteAssetStore(_RemoteAccessor):
    """An asset's store through the service. Asset entries never expire."""

    scope: AssetScope

    async def set(
        self,
        key: str,
        value: object,
        *,
        expected_version: int | None = None,
        idempotency_id: str | None = None,
        sensitive: bool | None = None,
    ) -> AppendResult:
        body = b'{"value":' + encode_value(check_key(key), value, 0)
        body += _closing(sensitive)
        path = "/store/" + _segment(key)
        return await self._write("PUT", path, body, expected_version, idempotency_id)

    async def set_many(
        self,
        values: Mapping[str, object],
        *,
        expected_version: int | None = None,
        idempotency_id: str | None = None,
        sensitive: bool | None = None,
    ) -> AppendResult:
        return await self._set_many(values, None, expected_version, idempotency_id, sensitive)

    async def clear(
        self, *, expected_version: int | None = None, idempotency_id: str | None = None
    ) -> AppendResult:
        return await self._write("DELETE", "/store", None, expected_version, idempotency_id)

    async def aset(self, key: str, value: object, **options: Any) -> AppendResult:
        return await self.set(key, value, **options)

    async def aclear(self, **options: Any) -> AppendResult:
        return await self.clear(**options)


def _point_query(at: At, prefix: str = "") -> dict[str, str]:
    if at.kind == "time":
        assert at.moment is not None
        return {prefix + "at": at.moment.isoformat()}
    return {prefix + at.kind: str(at.number)}


class _StateAnswer(msgspec.Struct):
    state: dict[str, Any]


class _EventPage(msgspec.Struct):
    events: list[RecordedEvent]
    next_after_seq: int | None


class _Timeline(msgspec.Struct):
    events: list[RecordedEvent]


class _Tries(msgspec.Struct):
    tries: list[TrySummary]


def _point_body(at: At) -> dict[str, Any]:
    if at.kind == "time":
        assert at.moment is not None
        return {"at": at.moment.isoformat()}
    return {at.kind: at.number}


_decode_event = msgspec.json.Decoder(RecordedEvent).decode
# A stream that has sent nothing, not even a heartbeat, for this long is taken as lost.
_STREAM_SILENCE: Final = 35.0


class RemoteSubscription(AsyncResource):
    """Events of GET /api/v1/events, one at a time, reconnecting when the stream breaks.

    Resumes after the last position the stream named (an event's id, or a heartbeat's), so no
    event is repeated or skipped across reconnects. The iteration ends on `aclose()`.
    """

    def __init__(self, remote: Remote, after_seq: int, scope: Scope | ScopeMatch | None) -> None:
        if type(after_seq) is not int or after_seq < 0:
            raise ValueError(f"after_seq must be an int >= 0, got {after_seq!r}")
        self.remote = remote
        self.position = after_seq  # the last position the stream named
        self._scope = scope
        self._query = _feed_query(scope)
        self._response: aiohttp.ClientResponse | None = None
        self._closed = False
        self._failures = 0

    def __aiter__(self) -> RemoteSubscription:
        return self

    async def aclose(self) -> None:
        self._closed = True
        response, self._response = self._response, None
        if response is not None:
            response.release()
            response.close()

    async def __anext__(self) -> RecordedEvent:
        while not self._closed:
            try:
                if self._response is None:
                    self._response = await self._connect()
                event = await self._read(self._response)
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as e:
                await self._drop()
                self._failures += 1
                if self._failures > self.remote.retries:
                    raise ServiceUnavailableError(
                        0, "unreachable", f"the event stream broke {self._failures} times: {e!r}"
                    ) from e
                await asyncio.sleep(min(2.0, self.remote.backoff * 2**self._failures))
                continue
            if event is None:  # the service ended the stream (shutting down): reconnect
                await self._drop()
                continue
            self._failures = 0
            if isinstance(self._scope, AssetScope) and event.scope != self._scope:
                continue
            return event
        raise StopAsyncIteration

    async def _drop(self) -> None:
        response, self._response = self._response, None
        if response is not None:
            response.close()

    async def _connect(self) -> aiohttp.ClientResponse:
        remote = self.remote
        url = URL(remote._base + "/api/v1/events?" + urlencode(self._query), encoded=True)
        response = await remote._session.get(
            url,
            headers={"Accept": "text/event-stream", "Last-Event-ID": str(self.position)},
            timeout=aiohttp.ClientTimeout(total=None, sock_read=_STREAM_SILENCE),
        )
        if response.status != 200:
            content = await response.read()
            response.close()
            raise _error_of(response.status, content, None)
        return response

    async def _read(self, response: aiohttp.ClientResponse) -> RecordedEvent | None:
        """The next event of the stream; None when the stream ended."""
        event_id: str | None = None
        data: list[bytes] = []
        while True:
            line = await response.content.readline()
            if not line:
                return None
            line = line.rstrip(b"\r\n")
            if line:
                field, _, value = line.partition(b":")
                value = value.removeprefix(b" ")
                if field == b"id":
                    event_id = value.decode()
                elif field == b"data":
                    data.append(value)
                continue
            if event_id is not None and event_id.isdigit():
                self.position = max(self.position, int(event_id))
            if data:
                return _decode_event(b"\n".join(data))
            event_id = None


def _feed_query(scope: Scope | ScopeMatch | None) -> dict[str, str]:
    match scope:
        case None:
            return {}
        case TaskScope():
            return {
                "dag": scope.dag_id,
                "run": scope.run_id,
                "task": scope.task_id,
                "map_index": str(scope.map_index),
            }
        case AssetScope():
            return {"kind": "asset"}  # the service filters by kind; the client by the asset
        case ScopeMatch():
            names = {
                "kind": scope.kind,
                "dag": scope.dag_id,
                "run": scope.run_id,
                "task": scope.task_id,
                "map_index": None if scope.map_index is None else str(scope.map_index),
            }
            return {k: v for k, v in names.items() if v is not None}
    raise TypeError(f"scope must be a TaskScope, an AssetScope or a ScopeMatch, got {scope!r}")


class RemoteHistory:
    """`store.history(scope)` through the service: events, state, diff, timeline, tries."""

    def __init__(self, remote: Remote, scope: Scope) -> None:
        self.remote = remote
        self.scope = scope
        self._prefix, self._query = _scope_path(scope)

    def __repr__(self) -> str:
        return f"<RemoteHistory of {self.scope}>"

    async def _get(self, path: str, query: Mapping[str, str], kind: type[T]) -> T | None:
        """The answer, or None if nothing was ever written to the scope."""
        status, content = await self.remote.request(
            "GET",
            self._prefix + path,
            query={**self._query, **query},
            scope=self.scope,
            ok=frozenset({200, 404}),
        )
        if status == 404:
            if _decode_error(content).reason == "unknown_scope":
                return None
            raise _error_of(status, content, self.scope)
        return msgspec.json.decode(content, type=kind)

    async def events(
        self,
        key: str | None = None,
        kinds: Iterable[str] | None = None,
        try_number: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after_seq: int | None = None,
        limit: int | None = None,
    ) -> list[RecordedEvent]:
        """The scope's events, oldest first, filtered; fetched page by page up to `limit`."""
        query: dict[str, str] = {}
        if key is not None:
            query["key"] = check_key(key)
        if kinds is not None:
            query["kinds"] = kinds if isinstance(kinds, str) else ",".join(kinds)
        if try_number is not None:
            query["try"] = str(try_number)
        if since is not None:
            query["since"] = since.isoformat()
        if until is not None:
            query["until"] = until.isoformat()
        found: list[RecordedEvent] = []
        while limit is None or len(found) < limit:
            page_size = 1000 if limit is None else min(1000, limit - len(found))
            if page_size == 0:
                break
            query["limit"] = str(page_size)
            if after_seq is not None:
                query["after_seq"] = str(after_seq)
            page = await self._get("/history", query, _EventPage)
            if page is None:
                return []
            found += page.events
            if page.next_after_seq is None:
                break
            after_seq = page.next_after_seq
        return found

    async def state(self, at: At) -> dict[str, Any]:
        """The scope's {key: value} as of `at`."""
        answer = await self._get("/state", _point_query(at), _StateAnswer)
        if answer is None:
            return self._empty(at)
        return answer.state

    async def diff(self, a: At, b: At) -> Diff:
        """What changed from the state as of `a` to the state as of `b`."""
        query = {**_point_query(a, "from_"), **_point_query(b, "to_")}
        answer = await self._get("/diff", query, Diff)
        if answer is None:
            self._empty(a)
            self._empty(b)
            return Diff(added={}, removed={}, changed={})
        return answer

    async def timeline(self, key: str, *, after_seq: int | None = None) -> list[RecordedEvent]:
        """Every set and delete of one key, oldest first."""
        query = {} if after_seq is None else {"after_seq": str(after_seq)}
        answer = await self._get("/timeline/" + _segment(check_key(key)), query, _Timeline)
        return [] if answer is None else answer.events

    async def tries(self) -> list[TrySummary]:
        """One summary per try that wrote to the scope, in try order."""
        answer = await self._get("/tries", {}, _Tries)
        return [] if answer is None else answer.tries

    async def rewind(
        self,
        at: At,
        *,
        try_number: int | None = None,
        expected_version: int | None = None,
        dry_run: bool = False,
    ) -> RewindResult:
        """`History.rewind` through the service (admin tokens); the actor is the token's."""
        body = {**_point_body(at), "dry_run": dry_run}
        headers: dict[str, str] = {}
        if try_number is not None:
            headers["Tasktrail-Try"] = str(try_number)
        if expected_version is not None:
            headers["If-Match"] = f'"{expected_version}"'
        _, content = await self.remote.request(
            "POST",
            self._prefix + "/store:rewind",
            query=self._query,
            body=msgspec.json.encode(body),
            headers=headers,
            scope=self.scope,
        )
        answer = msgspec.json.decode(content, type=RewindAnswer)
        return RewindResult(
            point=answer.point,
            rewound_to=answer.rewound_to,
            version=answer.version,
            seq=answer.seq,
            set=answer.set,
            deleted=answer.deleted,
            diff=Diff(added=answer.added, removed=answer.removed, changed=answer.changed),
            dry_run=answer.dry_run,
        )

    def _empty(self, at: At) -> dict[str, Any]:
        # What the embedded history answers for a scope nothing was written to.
        if at.kind in ("end_of_try", "start_of_try") or (at.kind == "version" and at.number):
            raise NoSuchPointError(self.scope, str(at), "nothing was ever written to it")
        return {}


def connect(
    base_url: str,
    *,
    token: str,
    retries: int = 4,
    backoff: float = 0.05,
    request_timeout: float = 30.0,
    connections: int = 256,
) -> Opening[Remote]:
    """Connect to a tasktrail service at `base_url` with a bearer `token`.

    `async with connect(url, token=...) as remote:` closes the connection after the block;
    `remote = await connect(url, token=...)` ... `await remote.aclose()` (from any task).
    `retries` bounds the retries of one call (connection errors and 5xx); `backoff` is the first
    wait in seconds, doubled each retry up to 2 s, with jitter.
    """

    async def open_() -> Remote:
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=connections),
            headers={"Authorization": f"Bearer {token}"},
            timeout=aiohttp.ClientTimeout(total=request_timeout),
        )
        return Remote(session, base_url, retries=retries, backoff=backoff)

    return Opening(open_)


# ----------------------------------------------------------------------------- blocking


@contextmanager
def connect_blocking(base_url: str, *, token: str, **options: Any) -> Iterator[BlockingRemote]:
    """`with connect_blocking(url, token=...) as remote:` for code without an event loop."""
    with (
        start_blocking_portal() as portal,
        portal.wrap_async_context_manager(connect(base_url, token=token, **options)) as remote,
    ):
        yield BlockingRemote(portal, remote)


class BlockingRemote:
    def __init__(self, portal: BlockingPortal, remote: Remote) -> None:
        self._portal = portal
        self.remote = remote

    def task_store(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        map_index: int = -1,
        try_number: int | None = None,
    ) -> BlockingRemoteAccessor:
        accessor = self.remote.task_store(dag_id, run_id, task_id, map_index, try_number)
        return BlockingRemoteAccessor(self._portal, accessor)

    def asset_store(
        self, name: str | None = None, uri: str | None = None
    ) -> BlockingRemoteAccessor:
        return BlockingRemoteAccessor(self._portal, self.remote.asset_store(name, uri))

    def history(self, scope: Scope) -> BlockingRemoteHistory:
        return BlockingRemoteHistory(self._portal, self.remote.history(scope))


class BlockingRemoteHistory:
    """RemoteHistory as plain calls: events, state, diff, timeline, tries."""

    def __init__(self, portal: BlockingPortal, history: RemoteHistory) -> None:
        self._portal = portal
        self._history = history

    def events(self, **filters: Any) -> list[RecordedEvent]:
        result: list[RecordedEvent] = self._portal.call(partial(self._history.events, **filters))
        return result

    def state(self, at: At) -> dict[str, Any]:
        return self._portal.call(self._history.state, at)

    def diff(self, a: At, b: At) -> Diff:
        return self._portal.call(self._history.diff, a, b)

    def timeline(self, key: str, *, after_seq: int | None = None) -> list[RecordedEvent]:
        return self._portal.call(partial(self._history.timeline, key, after_seq=after_seq))

    def tries(self) -> list[TrySummary]:
        return self._portal.call(self._history.tries)

    def rewind(self, at: At, **options: Any) -> RewindResult:
        return self._portal.call(partial(self._history.rewind, at, **options))


class BlockingRemoteAccessor(BlockingAccessor[RemoteTaskStore | RemoteAssetStore]):
    """The remote accessor methods as plain calls: the embedded facade's, plus patch."""

    def patch(self, key: str, value: object, **options: Any) -> AppendResult:
        result: AppendResult = self._call(self._accessor.patch, key, value, **options)
        return result
