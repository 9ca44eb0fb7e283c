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
    scope_path,
    segment,
)
from eventstore.log.config import NEVER_EXPIRE, NeverExpire, check_retention
from eventstore.log.scopes import AssetScope, Scope, TaskScope
from eventstore.log.values import check_key, decode_value, encode_value
from eventstore.store import AppendResult

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
        self._prefix, self._query = scope_path(scope)

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

    async def _write_value(
        self,
        method: str,
        key: str,
        value: object,
        expiry: bytes,
        sensitive: bool | None,
        expected_version: int | None,
        idempotency_id: str | None,
    ) -> AppendResult:
        """One key's PUT or PATCH: its value, `expiry` (its JSON members, or nothing), its flag."""
        body = b'{"value":' + encode_value(check_key(key), value, 0) + expiry + _closing(sensitive)
        path = "/store/" + segment(key)
        return await self._write(method, path, body, expected_version, idempotency_id)

    async def get(self, key: str, default: Any = None) -> Any:
        """The key's current value, or `default` if it is absent or expired."""
        entry = await self.entry(key)
        return default if entry is None else decode_value(entry.value)

    async def entry(self, key: str) -> RemoteEntry | None:
        """The key's live entry (its JSON value as sent back, when it was set, when it expires),
        or None if it is absent or expired."""
        path = "/store/" + segment(check_key(key))
        status, content = await self._call("GET", path, ok=frozenset({200, 404}))
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
        path = "/store/" + segment(check_key(key))
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
        return await self._write_value(
            "PATCH", key, value, b"", sensitive, expected_version, idempotency_id
        )

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
        if expires_at is None:
            expiry = b',"retention":' + _retention(retention)
        elif retention is not None:
            raise ValueError("pass retention or expires_at, not both")
        elif not isinstance(expires_at, datetime) or expires_at.tzinfo is None:
            raise TypeError(f"expires_at must be an aware datetime, got {expires_at!r}")
        else:
            expiry = b',"expires_at":' + _encode(expires_at)
        return await self._write_value(
            "PUT", key, value, expiry, sensitive, expected_version, idempotency_id
        )

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
        return await self._write_value(
            "PUT", key, value, b"", sensitive, expected_version, idempotency_id
        )

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
