"""The log: append batches of writes atomically, and read events back.

`append_batch` is the whole write path. Inside one backend write transaction it plans every
request against the scope heads (fencing, expected version, idempotency, no-op deletes and
clears), hands out positions and versions, and applies the surviving requests together. A request
that fails its checks gets its own error; the others in the batch are written all the same.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Final, TypeVar

import anyio.lowlevel
import anyio.to_thread
import msgspec

from eventstore.log.backends.base import (
    CurrentRow,
    EventRow,
    IdempotentRow,
    LogBackend,
    ScopeRow,
    WriteTransaction,
)
from eventstore.log.config import NEVER_EXPIRE, NeverExpire, StoreConfig
from eventstore.log.crypto import ERASED, DataKey, Vault, is_sensitive, stored_value
from eventstore.log.errors import ConcurrencyError, StaleAttemptError
from eventstore.log.events import (
    AnyEvent,
    KeyDeleted,
    KeySet,
    RecordedEvent,
    ScopeCleared,
    ScopeErased,
    decode_event,
    encode_event,
    from_micros,
    to_micros,
)
from eventstore.log.scopes import Scope, TaskScope, scope_from_key, scope_key

__all__ = [
    "AppendRequest",
    "AppendResult",
    "ClearOp",
    "DeleteOp",
    "EraseOp",
    "MarkOp",
    "SetOp",
    "append_batch",
    "recorded_event",
]


class SetOp(msgspec.Struct, frozen=True):
    key: str
    value: bytes  # already checked and encoded JSON
    retention: timedelta | NeverExpire | None = None
    expires_at: datetime | None = None  # an absolute expiry wins over retention
    # True or False marks or clears the key's sensitive flag; None keeps the flag the key has
    # (a write that does not say never unmasks a secret).
    sensitive: bool | None = None
    rewound_to: int | None = None  # a rewind's set: the position it restores (KeySet.rewound_to)


class DeleteOp(msgspec.Struct, frozen=True):
    key: str
    rewound_to: int | None = None  # a rewind's delete (KeyDeleted.rewound_to)


class ClearOp(msgspec.Struct, frozen=True):
    all_map_indices: bool = False


class MarkOp(msgspec.Struct, frozen=True):
    """A system marker (e.g. `Compacted`), made once its position is known so it can name it."""

    make: Callable[[int], AnyEvent]


class EraseOp(msgspec.Struct, frozen=True):
    """Clear the scope and mark it erased; its data keys are destroyed before the batch."""


Op = SetOp | DeleteOp | ClearOp | MarkOp | EraseOp


class AppendRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One caller's write: its ops are appended together or not at all."""

    scope: Scope
    ops: Sequence[Op]
    try_number: int | None = None
    actor: str = "task"
    expected_version: int | None = None
    idempotency_id: str | None = None


class AppendResult(msgspec.Struct, frozen=True, kw_only=True):
    """What an append did: the scope's version after it and the position of its last event."""

    version: int
    seq: int | None  # None when the write changed nothing (a delete of an absent key)
    events: int
    recorded_at: datetime


_encode_result = msgspec.json.Encoder().encode
_decode_result = msgspec.json.Decoder(AppendResult).decode


class _ScopeView:
    """A scope's head as this batch has changed it so far."""

    __slots__ = ("live", "row", "scope")

    def __init__(self, scope: Scope, row: ScopeRow) -> None:
        self.scope = scope
        self.row = row
        self.live: set[str] | None = None  # live keys, loaded when a delete or clear needs them


class _Batch:
    def __init__(
        self,
        tx: WriteTransaction,
        config: StoreConfig,
        now: int,
        last_seq: int,
        vault: Vault | None = None,
        keys: _Keys | None = None,
    ) -> None:
        self.tx = tx
        self.vault = vault
        self.keys = keys or _Keys()
        self.config = config
        self.now = now
        self.seq = last_seq
        self.views: dict[str, _ScopeView] = {}
        self.events: list[EventRow] = []
        self.final: dict[tuple[int, str], CurrentRow | None] = {}
        self.cleared: set[int] = set()
        self.touched: dict[int, _ScopeView] = {}
        self.idempotent: dict[tuple[int, str], bytes] = {}
        self.new_idempotent: list[IdempotentRow] = []
        self.scope_keys: dict[Scope, str] = {}
        self.idempotent_loaded = False
        # The sensitive flags of keys as stored before the batch, by (scope_id, key).
        self.flags: dict[tuple[int, str], bool] = {}
        self.recorded_at = from_micros(now)
        self.expiry_times: dict[int, datetime] = {}
        days = config.default_retention_days
        # timedelta rounds fractional days to the microsecond; float arithmetic truncates.
        self.default_retention = None if days == 0 else to_micros_delta(timedelta(days=days))

    def add_views(self, scope_keys: dict[Scope, str], found: dict[str, ScopeRow]) -> None:
        """Views of the scopes the batch addresses, from their heads read all at once."""
        self.scope_keys = scope_keys
        for scope, key in scope_keys.items():
            row = found.get(key)
            self.views[key] = _ScopeView(scope, row or _new_scope_row(scope, key))

    async def load_idempotent(self, requests: Sequence[AppendRequest]) -> None:
        """The stored results of the batch's idempotency ids, every scope in one statement."""
        wanted: list[tuple[int, str]] = []
        for request in requests:
            if request.idempotency_id is not None:
                scope_id = self.views[self.scope_keys[request.scope]].row.scope_id
                if scope_id:
                    wanted.append((scope_id, request.idempotency_id))
        if wanted:
            self.idempotent.update(await self.tx.select_idempotent(wanted))
        self.idempotent_loaded = True

    async def view(self, scope: Scope) -> _ScopeView:
        key = self.scope_keys.get(scope) or scope_key(scope)
        view = self.views.get(key)
        if view is None:
            row = (await self.tx.select_scopes([key])).get(key)
            view = _ScopeView(scope, row or _new_scope_row(scope, key))
            self.views[key] = view
        return view

    async def live_keys(self, view: _ScopeView) -> set[str]:
        if view.live is None:
            scope_id = view.row.scope_id
            live = await self.tx.select_live_keys(scope_id, self.now) if scope_id else set()
            # Sets earlier in this batch are not in the table yet; only sets can come before
            # the first load (deletes and clears load it), so the pending rows complete it.
            for (pending_scope, key), row in self.final.items():
                if pending_scope == scope_id and row is not None:
                    if row.expires_at is None or row.expires_at > self.now:
                        live.add(key)
                    else:
                        live.discard(key)
            view.live = live
        return view.live

    async def plan(self, request: AppendRequest) -> AppendResult:
        key = self.scope_keys.get(request.scope)
        view = self.views[key] if key is not None else await self.view(request.scope)
        row = view.row
        if request.idempotency_id is not None and row.scope_id:
            done = await self._idempotent_result(row.scope_id, request.idempotency_id)
            if done is not None:
                return done
        if (
            request.try_number is not None
            and row.max_try is not None
            and request.try_number < row.max_try
        ):
            raise StaleAttemptError(request.scope, request.try_number, row.max_try)
        if request.expected_version is not None and request.expected_version != row.version:
            raise ConcurrencyError(request.scope, request.expected_version, row.version)

        if row.scope_id:
            await self._load_flags(row.scope_id, request.ops)
        appended = 0
        last_seq: int | None = None
        for i, op in enumerate(request.ops, 1):
            if i % _SLICE == 0:
                # A big batch is planned in slices: between them the event loop serves others.
                await anyio.lowlevel.checkpoint()
            match op:
                case SetOp():
                    if not row.scope_id:
                        await self._ensure_stored(view)
                    last_seq = self._append_set(view, request, op)
                    appended += 1
                case DeleteOp(key=key, rewound_to=rewound_to):
                    live = await self.live_keys(view)
                    if key in live:
                        live.discard(key)
                        deleted = KeyDeleted(key=key, rewound_to=rewound_to)
                        last_seq = self._append(view, request, deleted, key=key)
                        self.final[(row.scope_id, key)] = None
                        appended += 1
                case ClearOp(all_map_indices=fleet):
                    for target in await self._clear_targets(view, fleet):
                        live = await self.live_keys(target)
                        if not live:
                            continue
                        live.clear()
                        seq = self._append(
                            target, request, ScopeCleared(all_map_indices=fleet), key=None
                        )
                        self._clear_projection(target.row.scope_id)
                        if target is view:
                            last_seq = seq
                        appended += 1
                case MarkOp(make=make):
                    await self._ensure_stored(view)
                    last_seq = self._append(view, request, make(self.seq + 1), key=None)
                    appended += 1
                case EraseOp():
                    # Always a clear, so the fold of the log drops expired rows too, as the
                    # projection does; then the marker.
                    await self._ensure_stored(view)
                    if view.live is not None:
                        view.live.clear()
                    self._append(view, request, ScopeCleared(), key=None)
                    self._clear_projection(row.scope_id)
                    erased = ScopeErased(data_keys_through=self.keys.erased.get(id(request), 0))
                    last_seq = self._append(view, request, erased, key=None)
                    appended += 2
        result = AppendResult(
            version=row.version,
            seq=last_seq,
            events=appended,
            recorded_at=self.recorded_at,
        )
        if request.idempotency_id is not None and row.scope_id:
            encoded = _encode_result(result)
            self.idempotent[(row.scope_id, request.idempotency_id)] = encoded
            self.new_idempotent.append(
                IdempotentRow(row.scope_id, request.idempotency_id, encoded, self.now)
            )
        return result

    async def _idempotent_result(self, scope_id: int, idempotency_id: str) -> AppendResult | None:
        encoded = self.idempotent.get((scope_id, idempotency_id))
        if encoded is None and not self.idempotent_loaded:
            pair = (scope_id, idempotency_id)
            encoded = (await self.tx.select_idempotent([pair])).get(pair)
        return None if encoded is None else _decode_result(encoded)

    async def _load_flags(self, scope_id: int, ops: Sequence[Op]) -> None:
        """Read the stored flags of the keys that `ops` set without marking them sensitive
        (a write that does not say keeps the flag; one that says False clears it, on record)."""
        wanted = [
            op.key
            for op in ops
            if isinstance(op, SetOp)
            and op.sensitive is not True
            and (scope_id, op.key) not in self.flags
        ]
        if not wanted:
            return
        heads = await self.tx.select_current_heads(scope_id, wanted)
        for key in wanted:
            head = heads.get(key)
            self.flags[(scope_id, key)] = head is not None and is_sensitive(head)

    def _flagged(self, scope_id: int, key: str) -> bool:
        """Whether the key is sensitive as the batch has left it so far (a delete or clear
        ends the key, and its flag with it)."""
        pair = (scope_id, key)
        if pair in self.final:
            pending = self.final[pair]
            return pending is not None and is_sensitive(pending.value)
        if scope_id in self.cleared:
            return False
        return self.flags.get(pair, False)

    async def _ensure_stored(self, view: _ScopeView) -> None:
        if not view.row.scope_id:
            view.row.scope_id = await self.tx.insert_scope(view.row)

    async def _clear_targets(self, view: _ScopeView, fleet: bool) -> list[_ScopeView]:
        scope = view.scope
        if not fleet or not isinstance(scope, TaskScope):
            return [view]
        rows = await self.tx.select_task_scopes(scope.dag_id, scope.run_id, scope.task_id)
        targets = [view]
        for row in sorted(rows, key=lambda r: r.map_index or 0):
            if row.scope_key != view.row.scope_key:
                sibling = self.views.get(row.scope_key)
                if sibling is None:
                    sibling = _ScopeView(scope_from_key(row.scope_key), row)
                    self.views[row.scope_key] = sibling
                targets.append(sibling)
        return targets

    def _append_set(self, view: _ScopeView, request: AppendRequest, op: SetOp) -> int:
        expires = self._expiry(op)
        data_key = self.keys.sealing.get(id(request))
        flagged = op.sensitive is not True and self._flagged(view.row.scope_id, op.key)
        sensitive = flagged if op.sensitive is None else op.sensitive
        event = KeySet(
            key=op.key,
            value=msgspec.Raw(op.value),
            expires_at=None if expires is None else self._expiry_time(expires),
            sensitive=sensitive,
            sensitive_cleared=True if flagged and not sensitive else msgspec.UNSET,
            rewound_to=op.rewound_to,
        )
        if data_key is not None:
            assert self.vault is not None
            # Sealed for the version this event is about to get (see _append).
            event = self.vault.seal(
                data_key, view.row.scope_key, op.key, view.row.version + 1, event
            )
        seq = self._append(view, request, event, key=op.key, expires_at=expires)
        self.final[(view.row.scope_id, op.key)] = CurrentRow(
            scope_id=view.row.scope_id,
            key=op.key,
            value=stored_value(event),
            expires_at=expires,
            version=view.row.version,
            seq=seq,
            updated_at=self.now,
        )
        if view.live is not None:
            if expires is None or expires > self.now:
                view.live.add(op.key)
            else:  # an absolute expiry already past: the key reads as absent at once
                view.live.discard(op.key)
        return seq

    def _expiry_time(self, micros: int) -> datetime:
        # Writes of one batch with the same retention share their expiry: convert it once.
        moment = self.expiry_times.get(micros)
        if moment is None:
            moment = self.expiry_times[micros] = from_micros(micros)
        return moment

    def _expiry(self, op: SetOp) -> int | None:
        if op.expires_at is not None:
            return to_micros(op.expires_at)
        retention = op.retention
        if retention is NEVER_EXPIRE:
            return None
        if retention is None:
            default = self.default_retention
            return None if default is None else self.now + default
        assert isinstance(retention, timedelta)
        return self.now + to_micros_delta(retention)

    def _append(
        self,
        view: _ScopeView,
        request: AppendRequest,
        event: AnyEvent,
        *,
        key: str | None,
        expires_at: int | None = None,
    ) -> int:
        row = view.row
        self.seq += 1
        row.version += 1
        row.updated_at = self.now
        # Only the scope the request addresses is fenced and stamped with its try; the sibling
        # map indices of a fleet clear have tries of their own.
        own = view.scope == request.scope
        try_number = request.try_number if own else None
        if try_number is not None and (row.max_try is None or try_number > row.max_try):
            row.max_try = try_number
        self.events.append(
            EventRow(
                seq=self.seq,
                scope_id=row.scope_id,
                version=row.version,
                kind=event.__struct_config__.tag,  # type: ignore[arg-type]
                key=key,
                expires_at=expires_at,
                recorded_at=self.now,
                try_number=try_number,
                actor=request.actor,
                payload=encode_event(event),
            )
        )
        self.touched[row.scope_id] = view
        return self.seq

    def _clear_projection(self, scope_id: int) -> None:
        self.cleared.add(scope_id)
        for pair in [p for p in self.final if p[0] == scope_id]:
            del self.final[pair]

    async def apply(self) -> None:
        tx = self.tx
        # In slices, as planning: a backend may run its statements on the event loop's thread.
        await _in_slices(self.events, tx.insert_events)
        if self.cleared:
            await tx.clear_current(sorted(self.cleared))
        await _in_slices(
            [pair for pair, row in self.final.items() if row is None], tx.delete_current
        )
        await _in_slices([row for row in self.final.values() if row is not None], tx.upsert_current)
        if self.touched:
            await tx.update_scopes([view.row for view in self.touched.values()])
        if self.new_idempotent:
            await tx.insert_idempotent(self.new_idempotent)


# How many ops a batch plans, and how many rows it writes, between two turns of the event loop.
_SLICE: Final = 250

T = TypeVar("T")


async def _in_slices(items: list[T], write: Callable[[list[T]], Awaitable[None]]) -> None:
    """`write(items)` in runs of `_SLICE`, the event loop turning between them; a small batch
    (nearly all of them) is one call."""
    if len(items) <= _SLICE:
        if items:
            await write(items)
        return
    for start in range(0, len(items), _SLICE):
        if start:
            await anyio.lowlevel.checkpoint()
        await write(items[start : start + _SLICE])


def to_micros_delta(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _new_scope_row(scope: Scope, key: str) -> ScopeRow:
    if isinstance(scope, TaskScope):
        return ScopeRow(
            scope_id=0,
            scope_key=key,
            dag_id=scope.dag_id,
            run_id=scope.run_id,
            task_id=scope.task_id,
            map_index=scope.map_index,
        )
    return ScopeRow(scope_id=0, scope_key=key)


class _Keys:
    """What `prepare_keys` did for a batch, by id of the request."""

    __slots__ = ("erased", "sealing")

    def __init__(self) -> None:
        self.sealing: dict[int, DataKey] = {}  # the data key a request seals its values with
        self.erased: dict[int, int] = {}  # the data key generations an erasure destroyed


async def prepare_keys(vault: Vault | None, requests: Sequence[AppendRequest]) -> _Keys:
    """Find the data key each request seals with, and destroy the keys of erased scopes.

    Runs before the log's transaction: a new data key is committed to the key store before any
    value sealed with it, and an erased scope's keys are destroyed before its marker is written.
    Requests are taken in order, so a set queued after an erasure gets a new data key.
    """
    prepared = _Keys()
    if vault is None or vault.store is None:
        return prepared
    vault.refresh()
    erasing = any(isinstance(op, EraseOp) for r in requests for op in r.ops)
    sealing = [
        r for r in requests if vault.encrypting and any(isinstance(op, SetOp) for op in r.ops)
    ]
    if not erasing:
        missing = vault.missing([scope_key(r.scope) for r in sealing])
        if missing:
            await anyio.to_thread.run_sync(vault.ensure_keys, missing)
        for r in sealing:
            prepared.sealing[id(r)] = vault.data_key(scope_key(r.scope))
        return prepared
    for r in requests:
        key = scope_key(r.scope)
        if any(isinstance(op, EraseOp) for op in r.ops):
            prepared.erased[id(r)] = await anyio.to_thread.run_sync(vault.destroy, key)
        if vault.encrypting and any(isinstance(op, SetOp) for op in r.ops):
            if vault.missing([key]):
                await anyio.to_thread.run_sync(vault.ensure_keys, [key])
            prepared.sealing[id(r)] = vault.data_key(key)
    return prepared


async def append_batch(
    backend: LogBackend,
    requests: Sequence[AppendRequest],
    config: StoreConfig,
    now: datetime,
    vault: Vault | None = None,
) -> list[AppendResult | BaseException]:
    """Append every request in one transaction; each gets its result or its own error.

    An error of the transaction itself (disk full, lost connection) is every request's error.
    With a vault, values are sealed (eventstore.log.crypto) with the data keys `prepare_keys` found.
    """
    results: list[AppendResult | BaseException] = []
    scope_keys: dict[Scope, str] = {}
    for request in requests:
        if request.scope not in scope_keys:
            scope_keys[request.scope] = scope_key(request.scope)
    keys = await prepare_keys(vault, requests)
    async with backend.write() as tx:
        # The heads of the log and of every scope addressed, read under the write lock.
        head, found = await tx.select_head_and_scopes(list(scope_keys.values()))
        # Recorded times never go backwards, so "as of a time" is a prefix of the log.
        now_us = max(to_micros(now), head.last_recorded_at)
        batch = _Batch(tx, config, now_us, head.last_seq, vault, keys)
        batch.add_views(scope_keys, found)
        await batch.load_idempotent(requests)
        for request in requests:
            try:
                results.append(await batch.plan(request))
            except (ConcurrencyError, StaleAttemptError) as error:
                results.append(error)
        await batch.apply()
        if batch.seq != head.last_seq:
            head.last_seq = batch.seq
            head.last_recorded_at = now_us
            await tx.update_head(head)
    return results


def recorded_event(
    row: EventRow,
    scope: Scope,
    vault: Vault | None = None,
    *,
    erased_before: int = 0,
    scope_key_: str | None = None,
) -> RecordedEvent:
    """Decode a stored event for readers; values open through the vault.

    `erased_before`: the position of the scope's last `erased` marker; a value before it reads
    as erased (value None, erased=True) whatever copy of it is left.
    """
    event = decode_event(row.payload)
    value: Any = None
    detail = None
    expires_at = None
    sensitive = erased = cleared = False
    rewound_to: int | None = None
    match event:
        case KeySet(expires_at=expires, sensitive=sensitive, rewound_to=rewound_to):
            expires_at = expires
            cleared = event.sensitive_cleared is True
            if row.seq < erased_before:
                erased = True
            else:
                value = (vault or _PLAIN).open_event(
                    scope_key_ or scope_key(scope), row.version, event
                )
                if value is ERASED:
                    value, erased = None, True
        case KeyDeleted(rewound_to=rewound_to):
            pass
        case ScopeCleared(all_map_indices=False):
            pass
        case ScopeCleared():
            detail = {"all_map_indices": True}
        case _:
            detail = msgspec.to_builtins(event)
            detail.pop("kind", None)
    return RecordedEvent(
        seq=row.seq,
        version=row.version,
        kind=row.kind,  # type: ignore[arg-type]
        scope=scope,
        key=row.key,
        value=value,
        expires_at=expires_at,
        recorded_at=from_micros(row.recorded_at),
        try_number=row.try_number,
        actor=row.actor,
        detail=detail,
        sensitive=sensitive,
        sensitive_cleared=cleared,
        erased=erased,
        rewound_to=rewound_to,
    )


_PLAIN = Vault()
