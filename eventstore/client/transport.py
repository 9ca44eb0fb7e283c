"""HTTP to the service: requests with retries, and the answers' errors rebuilt.

Connection errors and 5xx answers are retried with exponential backoff, a bounded number of
times. Errors come back as the exception classes the embedded store raises (the reasons table,
`eventstore.reasons`, read backwards); auth and other service answers raise `ServiceError`
subclasses.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import time
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import quote, urlencode

import aiohttp
import msgspec
from anyio.abc import AsyncResource
from yarl import URL

from eventstore.log.errors import EventStoreError
from eventstore.log.scopes import Scope, TaskScope
from eventstore.reasons import error_class

__all__ = [
    "AuthenticationError",
    "PermissionDeniedError",
    "ServiceError",
    "ServiceUnavailableError",
    "Transport",
    "decode_error",
    "error_of",
    "new_idempotency_id",
    "scope_path",
    "segment",
]

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


decode_error = msgspec.json.Decoder(_ErrorBody).decode


def error_of(status: int, body: bytes, scope: Scope | None) -> BaseException:
    """The exception an error answer stands for: the store's own class where the reason is one
    of the store's errors, else a `ServiceError` by status."""
    try:
        answer = decode_error(body)
    except msgspec.DecodeError:
        answer = _ErrorBody("unknown", body[:200].decode(errors="replace"))
    kind = error_class(answer.reason)
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


def segment(text: str) -> str:
    # Every character but unreserved ones is escaped, "/" and "." included, so a key like
    # "a/b" or ".." stays one path segment and no client or proxy normalizes it away.
    return quote(text, safe="").replace(".", "%2E")


def scope_path(scope: Scope) -> tuple[str, dict[str, str]]:
    """The escaped path prefix of a scope's routes, and the query naming it (asset uris)."""
    if isinstance(scope, TaskScope):
        parts = [segment(scope.dag_id), segment(scope.run_id), segment(scope.task_id)]
        return "/api/v1/tasks/" + "/".join([*parts, str(scope.map_index)]), {}
    if scope.name is not None:
        query = {} if scope.uri is None else {"uri": scope.uri}
        return f"/api/v1/assets/by-name/{segment(scope.name)}", query
    assert scope.uri is not None
    return "/api/v1/assets/by-uri", {"uri": scope.uri}


class Transport(AsyncResource):
    """HTTP to one tasktrail service: requests (path already escaped) with retries, and the
    errors of its answers rebuilt as the store's exception classes."""

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

        With a `scope`, `path` is one of the scope's routes: the scope's prefix goes before it
        and its query (an asset's uri) with `query`. Answers with a status in `ok` are
        returned; every other raises its error.
        """
        if scope is not None:
            prefix, scope_query = scope_path(scope)
            path, query = prefix + path, {**scope_query, **(query or {})}
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
                    raise error_of(status, content, scope)
            await asyncio.sleep(min(2.0, self.backoff * 2**attempt) * (0.5 + random.random()))
            attempt += 1
