"""The accessors task code awaits: `TaskStore` (one task instance, as one try sees it) and
`AssetStore` (one asset, across all runs), made by `Store.task_store` and `Store.asset_store`.

Every write is checked here, before it is queued, so bad input never reaches the log: keys,
values, retention and expiry, the expected version and the idempotency id.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

import anyio.lowlevel

from eventstore.log.config import NeverExpire, check_retention
from eventstore.log.envelope import ERASED
from eventstore.log.errors import ExpiryValueError
from eventstore.log.requests import AppendRequest, AppendResult, ClearOp, DeleteOp, Op, SetOp
from eventstore.log.scopes import AssetScope, Scope, TaskScope, scope_key
from eventstore.log.values import check_key, check_label, encode_value

if TYPE_CHECKING:
    from eventstore.store import Store

__all__ = ["AssetStore", "TaskStore"]


class _Accessor:
    """Reads and writes of one scope, stamped with one try and actor."""

    def __init__(self, store: Store, scope: Scope, try_number: int | None, actor: str) -> None:
        if try_number is not None and (type(try_number) is not int or try_number < 0):
            raise ValueError(f"try_number must be an int >= 0 or None, got {try_number!r}")
        self.store = store
        self.scope = scope
        self.try_number = try_number
        self.actor = check_label("actor", actor)
        self._scope_key = scope_key(scope)  # computed once: every get needs it

    def __repr__(self) -> str:
        tried = "" if self.try_number is None else f", try {self.try_number}"
        return f"<{type(self).__name__} {self.scope}{tried}>"

    async def get(self, key: str, default: Any = None) -> Any:
        """The key's current value, or `default` if it is absent or expired."""
        value = await self.store.read_value(self.scope, check_key(key), self._scope_key)
        # None: absent, expired, or erased (a projection restored from before an erasure).
        return default if value is None else value

    async def items(self) -> dict[str, Any]:
        """Every current {key: value} of the scope; expired and erased keys are left out."""
        store = self.store
        values = {r.key: store.open_value(self.scope, r) for r in await store.read_all(self.scope)}
        return {k: v for k, v in values.items() if v is not ERASED}

    async def version(self) -> int:
        return await self.store.version(self.scope)

    async def delete(
        self,
        key: str,
        *,
        expected_version: int | None = None,
        idempotency_id: str | None = None,
    ) -> AppendResult:
        """Remove a key; a key that is absent already is left as it is (nothing is appended)."""
        return await self._append([DeleteOp(check_key(key))], expected_version, idempotency_id)

    # Airflow's async accessor names, so code written for it runs unchanged (aset and aclear
    # beside each kind's own set and clear).
    aget = get
    adelete = delete

    async def _set_many(
        self,
        values: Mapping[str, object],
        retention: timedelta | NeverExpire | None,
        expires_at: datetime | None,
        expected_version: int | None,
        idempotency_id: str | None,
        sensitive: bool | None = None,
    ) -> AppendResult:
        if type(values) is not dict and not isinstance(values, Mapping):
            raise TypeError(
                f"set_many takes a mapping of key to value, got {type(values).__name__}"
            )
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
        limit = self.store.config.max_value_bytes
        ops: list[Op] = []
        for i, (key, value) in enumerate(values.items(), 1):
            if i % _SLICE == 0:
                # A big batch is checked in slices: between them the event loop serves others.
                await anyio.lowlevel.checkpoint()
            check_key(key)
            encoded = encode_value(key, value, limit)
            ops.append(SetOp(key, encoded, retention, expires_at, flag))
        return await self._append(ops, expected_version, idempotency_id)

    async def _append(
        self, ops: list[Op], expected_version: int | None, idempotency_id: str | None
    ) -> AppendResult:
        # Checked here: a bad one inside the batch would fail every write committed with it.
        if expected_version is not None and (
            type(expected_version) is not int or expected_version < 0
        ):
            error = TypeError if type(expected_version) is not int else ValueError
            raise error(f"expected_version must be an int >= 0 or None, got {expected_version!r}")
        if idempotency_id is not None:
            check_label("idempotency_id", idempotency_id)
        return await self.store.append(
            AppendRequest(
                scope=self.scope,
                ops=ops,
                try_number=self.try_number,
                actor=self.actor,
                expected_version=expected_version,
                idempotency_id=idempotency_id,
            )
        )


class TaskStore(_Accessor):
    """The store of one task instance, as one try of it sees it."""

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

        `sensitive=True` marks the key: the service masks its values for everyone but the
        writing task's token and admins (the library returns them as they are). The flag sticks:
        a later write that leaves `sensitive` out (None) keeps it, and only `sensitive=False`
        clears it (an event history shows). Deleting or clearing the key ends it.
        """
        return await self._set_many(
            {check_key(key): value},
            retention,
            expires_at,
            expected_version,
            idempotency_id,
            sensitive,
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
        return await self._set_many(
            values, retention, expires_at, expected_version, idempotency_id, sensitive
        )

    async def clear(
        self,
        all_map_indices: bool = False,
        *,
        expected_version: int | None = None,
        idempotency_id: str | None = None,
    ) -> AppendResult:
        """Remove every key of this map index, or of every map index of the task at once."""
        return await self._append(
            [ClearOp(bool(all_map_indices))], expected_version, idempotency_id
        )

    aset = set
    aclear = clear


class AssetStore(_Accessor):
    """The store of one asset, across all runs. Asset entries never expire."""

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
        return await self._set_many(
            {check_key(key): value}, _NEVER, None, expected_version, idempotency_id, sensitive
        )

    async def set_many(
        self,
        values: Mapping[str, object],
        *,
        expected_version: int | None = None,
        idempotency_id: str | None = None,
        sensitive: bool | None = None,
    ) -> AppendResult:
        return await self._set_many(
            values, _NEVER, None, expected_version, idempotency_id, sensitive
        )

    async def clear(
        self, *, expected_version: int | None = None, idempotency_id: str | None = None
    ) -> AppendResult:
        return await self._append([ClearOp()], expected_version, idempotency_id)

    aset = set
    aclear = clear


_NEVER: Final = NeverExpire()
_SLICE: Final = 250  # values checked and encoded between two turns of the event loop
