"""The accessors task code awaits: `TaskStore` (one task instance, as one try sees it) and
`AssetStore` (one asset, across all runs), made by `Store.task_store` and `Store.asset_store`.

Every write is checked here, before it is queued, so bad input never reaches the log: keys,
values, retention and expiry, the expected version and the idempotency id.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

import anyio.lowlevel

from eventstore.log.envelope import ERASED
from eventstore.log.requests import AppendRequest, AppendResult, ClearOp, DeleteOp, Op, SetOp
from eventstore.log.scopes import AssetScope, Scope, TaskScope, scope_key
from eventstore.log.values import check_key, check_label, encode_value
from eventstore.writes import AssetWrites, SetRequest, Stamps, TaskWrites

if TYPE_CHECKING:
    from eventstore.store import Store

__all__ = ["AssetStore", "ScopeOpener", "TaskStore"]

TaskT = TypeVar("TaskT", covariant=True)
AssetT = TypeVar("AssetT", covariant=True)


class ScopeOpener(ABC, Generic[TaskT, AssetT]):
    """`task_store` and `asset_store` as the store and its blocking facade offer them: each
    names its scope and opens it with `open_task` or `open_asset` (for a scope at hand)."""

    def task_store(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        map_index: int = -1,
        try_number: int | None = None,
        *,
        actor: str = "task",
    ) -> TaskT:
        """The store of one task instance, writing as try `try_number` of it (None: not
        tracked, no fencing) and as `actor`."""
        return self.open_task(TaskScope(dag_id, run_id, task_id, map_index), try_number, actor)

    def asset_store(
        self, name: str | None = None, uri: str | None = None, *, actor: str = "task"
    ) -> AssetT:
        """The store of one asset (at least one of `name` and `uri`), writing as `actor`."""
        return self.open_asset(AssetScope(name, uri), actor)

    @abstractmethod
    def open_task(
        self, scope: TaskScope, try_number: int | None = None, actor: str = "task"
    ) -> TaskT: ...

    @abstractmethod
    def open_asset(self, scope: AssetScope, actor: str = "task") -> AssetT: ...


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

    aget = get

    async def _set(self, request: SetRequest) -> AppendResult:
        limit = self.store.config.max_value_bytes
        retention, expires_at, sensitive = request.retention, request.expires_at, request.sensitive
        if request.one:  # a set: its key was checked by `set`
            [(key, value)] = request.values.items()
            one = SetOp(key, encode_value(key, value, limit), retention, expires_at, sensitive)
            return await self.store.append(self._request([one], request.stamps))
        ops: list[Op] = []
        for i, (key, value) in enumerate(request.values.items(), 1):
            if i % _SLICE == 0:
                # A big batch is checked in slices: between them the event loop serves others.
                await anyio.lowlevel.checkpoint()
            check_key(key)
            encoded = encode_value(key, value, limit)
            ops.append(SetOp(key, encoded, retention, expires_at, sensitive))
        return await self.store.append(self._request(ops, request.stamps))

    async def _delete(self, key: str, stamped: Stamps) -> AppendResult:
        return await self.store.append(self._request([DeleteOp(key)], stamped))

    async def _clear(self, all_map_indices: bool, stamped: Stamps) -> AppendResult:
        return await self.store.append(self._request([ClearOp(all_map_indices)], stamped))

    def _request(self, ops: list[Op], stamped: Stamps) -> AppendRequest:
        expected_version, idempotency_id = stamped
        return AppendRequest(
            scope=self.scope,
            ops=ops,
            try_number=self.try_number,
            actor=self.actor,
            expected_version=expected_version,
            idempotency_id=idempotency_id,
        )


class TaskStore(_Accessor, TaskWrites):
    """The store of one task instance, as one try of it sees it."""

    scope: TaskScope


class AssetStore(_Accessor, AssetWrites):
    """The store of one asset, across all runs. Asset entries never expire."""

    scope: AssetScope


_SLICE: Final = 250  # values checked and encoded between two turns of the event loop
