"""The writes of the accessor API, written once for every face that offers them: a task's
store (`TaskWrites`: set, clear, delete) and an asset's (`AssetWrites`: set, set_many, clear,
delete). Their arguments are checked here, before a face queues or sends anything, and handed
on as one value (`SetRequest`, `Stamps`) to the face's own write.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Final, NamedTuple

from eventstore.log.config import NeverExpire, check_retention
from eventstore.log.errors import ExpiryValueError
from eventstore.log.requests import AppendResult
from eventstore.log.values import check_key, check_label

__all__ = [
    "NEVER",
    "AssetWrites",
    "SetRequest",
    "Stamps",
    "TaskWrites",
    "set_request",
    "stamps",
]

NEVER: Final = NeverExpire()  # an asset's retention: asset entries never expire


class Stamps(NamedTuple):
    """What a write carries besides its changes: the version it expects and its idempotency
    id (None: none)."""

    expected_version: int | None
    idempotency_id: str | None


def stamps(expected_version: int | None, idempotency_id: str | None) -> Stamps:
    # Checked before the write is queued: a bad one inside a batch would fail every write
    # committed with it.
    if expected_version is not None and (type(expected_version) is not int or expected_version < 0):
        error = TypeError if type(expected_version) is not int else ValueError
        raise error(f"expected_version must be an int >= 0 or None, got {expected_version!r}")
    if idempotency_id is not None:
        check_label("idempotency_id", idempotency_id)
    return Stamps(expected_version, idempotency_id)


class SetRequest(NamedTuple):
    """A set or set_many, checked but for its keys and values (the face checks them as it
    encodes them): `expires_at` aware and in UTC, never beside a retention."""

    values: Mapping[str, object]
    retention: timedelta | NeverExpire | None
    expires_at: datetime | None
    sensitive: bool | None
    stamps: Stamps
    one: bool  # a set of one key (set), checked already, rather than a batch (set_many)


def set_request(
    values: Mapping[str, object],
    retention: timedelta | NeverExpire | None,
    expires_at: datetime | None,
    sensitive: bool | None,
    expected_version: int | None,
    idempotency_id: str | None,
    one: bool = False,
) -> SetRequest:
    if type(values) is not dict and not isinstance(values, Mapping):
        raise TypeError(f"set_many takes a mapping of key to value, got {type(values).__name__}")
    if expires_at is not None:
        if retention is not None:
            raise ValueError("pass retention or expires_at, not both")
        if not isinstance(expires_at, datetime) or expires_at.tzinfo is None:
            raise TypeError(f"expires_at must be an aware datetime, got {expires_at!r}")
        try:
            expires_at = expires_at.astimezone(UTC)
        except OverflowError:  # in the batch it would fail every write committed with it
            raise ExpiryValueError(expires_at) from None
    check_retention(retention)
    flag = None if sensitive is None else bool(sensitive)
    stamped = stamps(expected_version, idempotency_id)
    return SetRequest(values, retention, expires_at, flag, stamped, one)


class _Writes(ABC):
    async def delete(
        self, key: str, *, expected_version: int | None = None, idempotency_id: str | None = None
    ) -> AppendResult:
        """Remove a key; a key that is absent already is left as it is (nothing is appended)."""
        return await self._delete(check_key(key), stamps(expected_version, idempotency_id))

    @abstractmethod
    async def _set(self, request: SetRequest) -> AppendResult: ...

    @abstractmethod
    async def _delete(self, key: str, stamped: Stamps) -> AppendResult: ...

    @abstractmethod
    async def _clear(self, all_map_indices: bool, stamped: Stamps) -> AppendResult: ...

    # Airflow's async accessor names, so code written for it runs unchanged (aset and aclear
    # beside each kind's own set and clear).
    adelete = delete


class TaskWrites(_Writes):
    """The writes of one task instance's store."""

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

        `expires_at` (an aware datetime) sets the expiry instead of a retention.
        `sensitive=True` marks the key: the service masks its values for everyone but the
        writing task's token and admins (the library returns them as they are). The flag sticks:
        a later write that leaves `sensitive` out (None) keeps it, and only `sensitive=False`
        clears it (an event history shows). Deleting or clearing the key ends it.
        """
        values = {check_key(key): value}
        return await self._set(
            set_request(
                values, retention, expires_at, sensitive, expected_version, idempotency_id, True
            )
        )

    async def set_many(
        self,
        values: Mapping[str, object],
        *,
        retention: timedelta | NeverExpire | None = None,
        expires_at: datetime | None = None,
        expected_version: int | None = None,
        idempotency_id: str | None = None,
        sensitive: bool | None = None,
    ) -> AppendResult:
        """Store several keys in one atomic step, one version each."""
        return await self._set(
            set_request(values, retention, expires_at, sensitive, expected_version, idempotency_id)
        )

    async def clear(
        self,
        all_map_indices: bool = False,
        *,
        expected_version: int | None = None,
        idempotency_id: str | None = None,
    ) -> AppendResult:
        """Remove every key of this map index, or of every map index of the task at once."""
        return await self._clear(bool(all_map_indices), stamps(expected_version, idempotency_id))

    aset = set
    aclear = clear


class AssetWrites(_Writes):
    """The writes of one asset's store. Asset entries never expire."""

    async def set(
        self,
        key: str,
        value: object,
        *,
        expected_version: int | None = None,
        idempotency_id: str | None = None,
        sensitive: bool | None = None,
    ) -> AppendResult:
        values = {check_key(key): value}
        request = set_request(
            values, NEVER, None, sensitive, expected_version, idempotency_id, True
        )
        return await self._set(request)

    async def set_many(
        self,
        values: Mapping[str, object],
        *,
        expected_version: int | None = None,
        idempotency_id: str | None = None,
        sensitive: bool | None = None,
    ) -> AppendResult:
        request = set_request(values, NEVER, None, sensitive, expected_version, idempotency_id)
        return await self._set(request)

    async def clear(
        self, *, expected_version: int | None = None, idempotency_id: str | None = None
    ) -> AppendResult:
        return await self._clear(False, stamps(expected_version, idempotency_id))

    aset = set
    aclear = clear
