"""The log's write path: append batches of writes atomically.

`append_batch` is the whole write path. Inside one backend write transaction it plans every
request against the scope heads (fencing, expected version, idempotency, no-op deletes and
clears), hands out positions and versions, and applies the surviving requests together. A request
that fails its checks gets its own error; the others in the batch are written all the same.

Around it: the requests and results (`requests`), what a batch reads of its scopes first
(`heads`), the data keys it seals with (`sealing`), and events read back (`recorded`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Final, TypeVar

import anyio.lowlevel
import anyio.to_thread
import msgspec

from eventstore.log.backends.base import LogBackend
from eventstore.log.backends.rows import CurrentRow, EventRow, IdempotentRow, Insert, LogHead
from eventstore.log.config import NEVER_EXPIRE, StoreConfig
from eventstore.log.envelope import stored_value
from eventstore.log.errors import ConcurrencyError, StaleAttemptError
from eventstore.log.events import (
    AnyEvent,
    KeyDeleted,
    KeySet,
    ScopeCleared,
    ScopeErased,
    encode_event,
    from_micros,
    to_micros,
)
from eventstore.log.heads import BatchHeads, ScopeView, to_micros_delta
from eventstore.log.requests import (
    AppendRequest,
    AppendResult,
    ClearOp,
    DeleteOp,
    EraseOp,
    MarkOp,
    SetOp,
    encode_result,
)
from eventstore.log.scopes import Scope, scope_key
from eventstore.log.sealing import prepare_keys
from eventstore.log.vault import Vault

__all__ = ["append_batch"]


class _Batch(BatchHeads):
    """Plans each request of a batch against the heads, then applies them together."""

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

        # Once `load_flags` read the batch's stored flags, a scope without them is one this
        # batch made: nothing of it is stored yet.
        if row.scope_id and not self.flags_loaded:
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
            encoded = encode_result(result)
            self.idempotent[(row.scope_id, request.idempotency_id)] = encoded
            self.new_idempotent.append(
                IdempotentRow(row.scope_id, request.idempotency_id, encoded, self.now)
            )
        return result

    def _append_set(self, view: ScopeView, request: AppendRequest, op: SetOp) -> int:
        expires: int | None
        expires_time: datetime | None = None
        if op.retention is None and op.expires_at is None:  # the usual set: no call needed
            expires, expires_time = self.default_expiry_at or self.default_expiry()
        else:
            expires = self._expiry(op)
            if expires is not None:
                expires_time = self._expiry_time(expires)
        data_key = self.keys.sealing.get(id(request)) if self.keys.sealing else None
        flagged = op.sensitive is not True and self._flagged(view.row.scope_id, op.key)
        sensitive = flagged if op.sensitive is None else op.sensitive
        event = KeySet(
            key=op.key,
            value=msgspec.Raw(op.value),
            expires_at=expires_time,
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
        view: ScopeView,
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

    async def apply(self, head: LogHead | None) -> None:
        """Write the batch; with the new log `head`, if it handed out positions."""
        tx = self.tx
        # The projection's deletes first: a key cleared and set again in the batch is set.
        if self.cleared:
            await tx.delete_current(scope_ids=sorted(self.cleared))
        deleted = [pair for pair, row in self.final.items() if row is None]
        if deleted:
            await _in_slices(deleted, tx.delete_current)
        events, current = self.events, [row for row in self.final.values() if row is not None]
        if len(events) > _SLICE or len(current) > _SLICE:
            # In slices, as planning: a backend may run its statements on the event loop's thread.
            await _in_slices(events, lambda rows: tx.insert(Insert(events=rows)))
            await _in_slices(current, lambda rows: tx.insert(Insert(current=rows)))
            events, current = [], []
        scopes = [view.row for view in self.touched.values()]
        # A usual batch: everything it writes in one call.
        rows = Insert(
            events=events, current=current, scopes=scopes, idempotent=self.new_idempotent, head=head
        )
        await tx.insert(rows)


# How many ops a batch plans, and how many rows it writes, between two turns of the event loop.
_SLICE: Final = 250

T = TypeVar("T")


async def _in_slices(items: list[T], write: Callable[[list[T]], Awaitable[object]]) -> None:
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


async def append_batch(
    backend: LogBackend,
    requests: Sequence[AppendRequest],
    config: StoreConfig,
    now: datetime,
    vault: Vault | None = None,
) -> list[AppendResult | BaseException]:
    """Append every request in one transaction; each gets its result or its own error.

    An error of the transaction itself (disk full, lost connection) is every request's error.
    With a vault, values are sealed (eventstore.log.vault) with the data keys `prepare_keys` found.
    """
    results: list[AppendResult | BaseException] = []
    scope_keys: dict[Scope, str] = {}
    for request in requests:
        if request.scope not in scope_keys:
            scope_keys[request.scope] = scope_key(request.scope)
    keys = (
        await prepare_keys(vault, requests)
        if vault is not None and vault.store is not None
        else None
    )
    now_us = to_micros(now)
    # The clock's own datetime is the recorded time, unless it is of another kind or zone.
    recorded_at = now if type(now) is datetime and now.tzinfo is UTC else None
    async with backend.write() as tx:
        # The heads of the log and of every scope addressed, read under the write lock.
        head, found = await tx.select_head_and_scopes(list(scope_keys.values()))
        # Recorded times never go backwards, so "as of a time" is a prefix of the log.
        if now_us < head.last_recorded_at:
            now_us, recorded_at = head.last_recorded_at, None
        batch = _Batch(tx, config, now_us, head.last_seq, vault, keys, recorded_at)
        batch.add_views(scope_keys, found)
        await batch.load_idempotent(requests)
        await batch.load_flags(requests)
        for request in requests:
            try:
                results.append(await batch.plan(request))
            except (ConcurrencyError, StaleAttemptError) as error:
                results.append(error)
        moved = batch.seq != head.last_seq
        await batch.apply(LogHead(batch.seq, now_us) if moved else None)
    return results
