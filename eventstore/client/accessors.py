"""A scope's keys through the service: the embedded TaskStore's and AssetStore's methods.

Every write carries an idempotency id (made here unless given), so a write whose response is
lost is retried without being recorded twice. Values and keys are checked here first, with the
store's errors, so a bad value never leaves the process.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import msgspec

from eventstore.client.transport import (
    Transport,
    decode_error,
    error_of,
    new_idempotency_id,
    segment,
)
from eventstore.log.config import NeverExpire
from eventstore.log.scopes import AssetScope, Scope, TaskScope
from eventstore.log.values import check_key, decode_value, encode_value
from eventstore.store import AppendResult
from eventstore.writes import AssetWrites, SetRequest, Stamps, TaskWrites, stamps

__all__ = ["RemoteAssetStore", "RemoteEntry", "RemoteTaskStore"]


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


_decode_result = msgspec.json.Decoder(AppendResult).decode
_encode = msgspec.json.Encoder().encode


class _RemoteAccessor:
    """Reads and writes of one scope through the service."""

    def __init__(self, remote: Transport, scope: Scope, try_number: int | None) -> None:
        self.remote = remote
        self.scope = scope
        self.try_number = try_number

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.scope}>"

    async def _write(
        self,
        method: str,
        path: str,
        body: bytes | None,
        stamped: Stamps,
        query: Mapping[str, str] | None = None,
    ) -> AppendResult:
        expected_version, idempotency_id = stamped
        headers = {"Idempotency-Key": idempotency_id or new_idempotency_id()}
        if self.try_number is not None:
            headers["Tasktrail-Try"] = str(self.try_number)
        if expected_version is not None:
            headers["If-Match"] = f'"{expected_version}"'
        _, content = await self.remote.request(
            method, path, query=query, body=body, headers=headers, scope=self.scope
        )
        return _decode_result(content)

    async def _set(self, request: SetRequest) -> AppendResult:
        """A set's PUT (its value, expiry and flag) or a set_many's POST :batch."""
        task = isinstance(self.scope, TaskScope)  # an asset's entries never expire
        closing = _closing(request.sensitive)
        if request.one:
            [(key, value)] = request.values.items()
            expiry = _expiry(request) if task else b""
            body = b'{"value":' + encode_value(check_key(key), value, 0) + expiry + closing
            return await self._write("PUT", "/store/" + segment(key), body, request.stamps)
        parts = [
            _encode(check_key(key)) + b":" + encode_value(key, value, 0)
            for key, value in request.values.items()
        ]
        body = b'{"values":{' + b",".join(parts) + b"}" + (_expiry(request) if task else b"")
        return await self._write("POST", "/store:batch", body + closing, request.stamps)

    async def _delete(self, key: str, stamped: Stamps) -> AppendResult:
        return await self._write("DELETE", "/store/" + segment(key), None, stamped)

    async def _clear(self, all_map_indices: bool, stamped: Stamps) -> AppendResult:
        query = None
        if isinstance(self.scope, TaskScope):
            query = {"all_map_indices": "true" if all_map_indices else "false"}
        return await self._write("DELETE", "/store", None, stamped, query)

    async def get(self, key: str, default: Any = None) -> Any:
        """The key's current value, or `default` if it is absent or expired."""
        entry = await self.entry(key)
        return default if entry is None else decode_value(entry.value)

    async def entry(self, key: str) -> RemoteEntry | None:
        """The key's live entry (its JSON value as sent back, when it was set, when it expires),
        or None if it is absent or expired."""
        path = "/store/" + segment(check_key(key))
        status, content = await self.remote.request(
            "GET", path, scope=self.scope, ok=frozenset({200, 404})
        )
        if status == 404:
            reason = decode_error(content).reason
            if reason in ("unknown_key", "unknown_scope"):
                return None
            raise error_of(status, content, self.scope)
        return _decode_entry(content)

    async def items(self) -> dict[str, Any]:
        """Every current {key: value} of the scope, fetched page by page."""
        result: dict[str, Any] = {}
        query = {"limit": "1000"}
        while True:
            _, content = await self.remote.request("GET", "/store", query=query, scope=self.scope)
            page = _decode_page(content)
            for entry in page.items:
                result[entry.key] = decode_value(entry.value)
            if page.next is None:
                return result
            query = {"limit": "1000", "after": page.next}

    async def version(self) -> int:
        query = {"limit": "0"}
        _, content = await self.remote.request("GET", "/store", query=query, scope=self.scope)
        return _decode_page(content).version

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
        stamped = stamps(expected_version, idempotency_id)
        return await self._write("PATCH", "/store/" + segment(key), body, stamped)

    # The embedded store's async-accessor alias, so Airflow-style code runs unchanged.
    aget = get


def _closing(sensitive: bool | None) -> bytes:
    """The end of a write's body: `sensitive` only when the caller said it (None keeps the
    key's flag, on the service as in the library)."""
    if sensitive is None:
        return b"}"
    return b',"sensitive":true}' if sensitive else b',"sensitive":false}'


def _expiry(request: SetRequest) -> bytes:
    """A task write's expiry members: `expires_at` (the instant, in UTC) or the retention."""
    if request.expires_at is None:
        return b',"retention":' + _retention(request.retention)
    return b',"expires_at":' + _encode(request.expires_at)


def _retention(retention: timedelta | NeverExpire | None) -> bytes:
    if retention is None:
        return b'"default"'
    if isinstance(retention, NeverExpire):
        return b'"never"'
    return _encode(retention.total_seconds())


class RemoteTaskStore(_RemoteAccessor, TaskWrites):
    """A task instance's store through the service: the embedded TaskStore's methods."""

    scope: TaskScope


class RemoteAssetStore(_RemoteAccessor, AssetWrites):
    """An asset's store through the service. Asset entries never expire."""

    scope: AssetScope
