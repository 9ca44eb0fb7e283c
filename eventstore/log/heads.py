"""What a batch of appends knows of the scopes it writes, read under the write lock."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime, timedelta

from eventstore.log.backends.base import WriteTransaction
from eventstore.log.backends.rows import CurrentRow, EventRow, IdempotentRow, Insert, ScopeRow
from eventstore.log.config import StoreConfig
from eventstore.log.envelope import is_sensitive
from eventstore.log.events import from_micros
from eventstore.log.requests import AppendRequest, AppendResult, Op, SetOp, decode_result
from eventstore.log.scopes import Scope, TaskScope, scope_from_key, scope_key
from eventstore.log.sealing import BatchKeys
from eventstore.log.vault import Vault

__all__ = ["BatchHeads", "ScopeView", "to_micros_delta"]


class ScopeView:
    """A scope's head as this batch has changed it so far."""

    __slots__ = ("live", "row", "scope")

    def __init__(self, scope: Scope, row: ScopeRow) -> None:
        self.scope = scope
        self.row = row
        self.live: set[str] | None = None  # live keys, loaded when a delete or clear needs them


class BatchHeads:
    """What a batch knows of the scopes it writes: their heads, live keys, sensitive flags and
    idempotency results, read once (batch-wide where it can) and kept as the batch changes them."""

    def __init__(
        self,
        tx: WriteTransaction,
        config: StoreConfig,
        now: int,
        last_seq: int,
        vault: Vault | None = None,
        keys: BatchKeys | None = None,
        recorded_at: datetime | None = None,
    ) -> None:
        """`now`: the batch's recorded time in microseconds; `recorded_at`: the same instant as
        a UTC datetime, when the caller has it (else it is converted from `now`)."""
        self.tx = tx
        self.vault = vault
        self.keys = keys or BatchKeys()
        self.config = config
        self.now = now
        self.seq = last_seq
        self.views: dict[str, ScopeView] = {}
        self.events: list[EventRow] = []
        self.final: dict[tuple[int, str], CurrentRow | None] = {}
        self.cleared: set[int] = set()
        self.touched: dict[int, ScopeView] = {}
        self.idempotent: dict[tuple[int, str], bytes] = {}
        self.new_idempotent: list[IdempotentRow] = []
        self.scope_keys: dict[Scope, str] = {}
        self.idempotent_loaded = False
        self.flags_loaded = False  # load_flags read the stored flags of the whole batch
        # The sensitive flags of keys as stored before the batch, by (scope_id, key).
        self.flags: dict[tuple[int, str], bool] = {}
        self.recorded_at = from_micros(now) if recorded_at is None else recorded_at
        self.expiry_times: dict[int, datetime] = {}
        retention = _default_retention(config.default_retention_days)
        self.default_retention = None if retention is None else retention[0]
        # The expiry of a set with the default retention, in microseconds and as the datetime
        # its event carries: the same for every such set of the batch, so worked out once, by
        # the first (`default_expiry`).
        self.default_expiry_at: tuple[int | None, datetime | None] | None = None

    def default_expiry(self) -> tuple[int | None, datetime | None]:
        """The expiry of a set with the default retention: (None, None) if it never expires."""
        expiry = self.default_expiry_at
        if expiry is None:
            retention = _default_retention(self.config.default_retention_days)
            if retention is None:
                expiry = (None, None)
            else:
                micros, delta = retention
                try:
                    moment = self.recorded_at + delta
                except OverflowError:  # past year 9999: fail as the conversion always did
                    moment = from_micros(self.now + micros)
                expiry = (self.now + micros, moment)
            self.default_expiry_at = expiry
        return expiry

    def add_views(self, scope_keys: dict[Scope, str], found: dict[str, ScopeRow]) -> None:
        """Views of the scopes the batch addresses, from their heads read all at once."""
        self.scope_keys = scope_keys
        for scope, key in scope_keys.items():
            row = found.get(key)
            self.views[key] = ScopeView(scope, row or new_scope_row(scope, key))

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

    async def load_flags(self, requests: Sequence[AppendRequest]) -> None:
        """The stored sensitive flags of the keys the batch sets without saying, every scope in
        one statement (a write that does not say keeps the flag; `_load_flags` reads the rest)."""
        wanted: dict[tuple[int, str], None] = {}
        for request in requests:
            scope_id = self.views[self.scope_keys[request.scope]].row.scope_id
            if scope_id:
                for op in request.ops:
                    if isinstance(op, SetOp) and op.sensitive is not True:
                        wanted[(scope_id, op.key)] = None
        if wanted:
            heads = await self.tx.select_current_heads(wanted)
            for pair in wanted:
                head = heads.get(pair)
                self.flags[pair] = head is not None and is_sensitive(head)
        self.flags_loaded = True

    async def view(self, scope: Scope) -> ScopeView:
        key = self.scope_keys.get(scope) or scope_key(scope)
        view = self.views.get(key)
        if view is None:
            row = (await self.tx.select_head_and_scopes([key]))[1].get(key)
            view = ScopeView(scope, row or new_scope_row(scope, key))
            self.views[key] = view
        return view

    async def live_keys(self, view: ScopeView) -> set[str]:
        if view.live is None:
            scope_id = view.row.scope_id
            live: set[str] = set()
            if scope_id:
                heads = await self.tx.select_current_heads(scope_id=scope_id, now=self.now)
                live = {key for _, key in heads}
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

    async def _idempotent_result(self, scope_id: int, idempotency_id: str) -> AppendResult | None:
        encoded = self.idempotent.get((scope_id, idempotency_id))
        if encoded is None and not self.idempotent_loaded:
            pair = (scope_id, idempotency_id)
            encoded = (await self.tx.select_idempotent([pair])).get(pair)
        return None if encoded is None else decode_result(encoded)

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
        heads = await self.tx.select_current_heads([(scope_id, key) for key in wanted])
        for key in wanted:
            head = heads.get((scope_id, key))
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

    async def _ensure_stored(self, view: ScopeView) -> None:
        if not view.row.scope_id:
            [view.row.scope_id] = await self.tx.insert(Insert(scopes=[view.row]))

    async def _clear_targets(self, view: ScopeView, fleet: bool) -> list[ScopeView]:
        scope = view.scope
        if not fleet or not isinstance(scope, TaskScope):
            return [view]
        task = (scope.dag_id, scope.run_id, scope.task_id)
        rows = (await self.tx.select_head_and_scopes(task=task))[1].values()
        targets = [view]
        for row in sorted(rows, key=lambda r: r.map_index or 0):
            if row.scope_key != view.row.scope_key:
                sibling = self.views.get(row.scope_key)
                if sibling is None:
                    sibling = ScopeView(scope_from_key(row.scope_key), row)
                    self.views[row.scope_key] = sibling
                targets.append(sibling)
        return targets


def new_scope_row(scope: Scope, key: str) -> ScopeRow:
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


@functools.lru_cache(maxsize=16)
def _default_retention(days: float) -> tuple[int, timedelta] | None:
    """StoreConfig.default_retention_days in microseconds and as a timedelta (None: never
    expires), kept for the next batch."""
    if days == 0:
        return None
    # timedelta rounds fractional days to the microsecond; float arithmetic truncates.
    delta = timedelta(days=days)
    return to_micros_delta(delta), delta


def to_micros_delta(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
