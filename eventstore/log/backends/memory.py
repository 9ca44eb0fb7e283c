"""The in-memory backend (`memory://`): plain dicts behind the storage interface.

Writes are buffered in the transaction and applied when it commits, so a failed batch leaves
nothing behind, exactly like the database backends.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager

import anyio
from msgspec.structs import replace

from eventstore.log.backends import rows as shape
from eventstore.log.backends.base import LogBackend, WriteTransaction
from eventstore.log.backends.rows import CurrentRow, EventRow, Ids, Keys, KeysAt, LogHead, ScopeRow
from eventstore.log.errors import StoreClosedError

__all__ = ["MemoryBackend"]


class _Data:
    def __init__(self) -> None:
        self.events: list[EventRow] = []  # position order
        self.scope_events: dict[int, list[EventRow]] = {}  # each scope's, in position order
        self.scopes: dict[str, ScopeRow] = {}
        self.scopes_by_id: dict[int, ScopeRow] = {}
        self.current: dict[int, dict[str, CurrentRow]] = {}
        # Each scope's projection keys in order, for pages by keyset; made when a page is first
        # asked for, kept up to date by commits from then on (see `_KeyChanges`).
        self.sorted_keys: dict[int, list[str]] = {}
        self.idempotent: dict[tuple[int, str], shape.IdempotentRow] = {}
        self.head = LogHead()

    def keys_of(self, scope_id: int) -> list[str]:
        keys = self.sorted_keys.get(scope_id)
        if keys is None:
            keys = self.sorted_keys[scope_id] = sorted(self.current.get(scope_id, {}))
        return keys


class _KeyChanges:
    """Keys a commit added to or removed from the projection, applied to the sorted keys at
    its end: a few by bisection, many by one merge (or one filter)."""

    def __init__(self, data: _Data) -> None:
        self.data = data
        self.added: dict[int, list[str]] = {}
        self.removed: dict[int, set[str]] = {}

    def add(self, scope_id: int, key: str) -> None:
        if scope_id in self.data.sorted_keys:
            self.added.setdefault(scope_id, []).append(key)

    def remove(self, scope_id: int, key: str) -> None:
        if scope_id in self.data.sorted_keys:
            self.removed.setdefault(scope_id, set()).add(key)

    def apply(self) -> None:
        for scope_id in self.added.keys() | self.removed.keys():
            keys = self.data.sorted_keys.get(scope_id)
            if keys is None:
                continue
            gone = self.removed.get(scope_id, set())
            if len(gone) > 16:
                keys[:] = [k for k in keys if k not in gone]
            else:
                for key in gone:
                    i = bisect.bisect_left(keys, key)
                    if i < len(keys) and keys[i] == key:
                        del keys[i]
            new = sorted(set(self.added.get(scope_id, ())))
            live = self.data.current.get(scope_id, {})
            new = [k for k in new if k in live]
            if len(new) > 16:
                keys.extend(new)
                keys.sort()  # two sorted runs: one merge
                keys[:] = [k for i, k in enumerate(keys) if i == 0 or keys[i - 1] != k]
            else:
                for key in new:
                    i = bisect.bisect_left(keys, key)
                    if i == len(keys) or keys[i] != key:
                        keys.insert(i, key)


class _MemoryTransaction(WriteTransaction):
    def __init__(self, data: _Data) -> None:
        self._data = data
        self._actions: list[tuple[str, object]] = []
        self._new_scopes: list[ScopeRow] = []
        self._next_scope_id = max(data.scopes_by_id, default=0) + 1

    async def select_head_and_scopes(
        self, scope_keys: Collection[str] = (), *, task: shape.Task | None = None
    ) -> tuple[LogHead, dict[str, ScopeRow]]:
        found = {}
        for key in scope_keys:
            row = self._data.scopes.get(key)
            if row is not None:
                found[key] = _copy_scope(row)
        if task is not None:
            # Scopes inserted earlier in this transaction count too, as they do in SQL.
            for row in [*self._data.scopes.values(), *self._new_scopes]:
                if (row.dag_id, row.run_id, row.task_id) == task:
                    found[row.scope_key] = _copy_scope(row)
        return replace(self._data.head), found

    async def select_current_heads(
        self, pairs: shape.Pairs = (), *, scope_id: int | None = None, now: int = 0
    ) -> dict[tuple[int, str], bytes]:
        current = self._data.current
        found = {(s, k): current[s][k].value[:2] for s, k in pairs if k in current.get(s, {})}
        if scope_id is not None:
            for key, row in current.get(scope_id, {}).items():
                if row.expires_at is None or row.expires_at > now:
                    found[(scope_id, key)] = row.value[:2]
        return found

    async def select_idempotent(
        self, keys: Collection[tuple[int, str]]
    ) -> dict[tuple[int, str], bytes]:
        table = self._data.idempotent
        return {key: table[key].result for key in keys if key in table}

    async def insert(self, batch: shape.Insert) -> list[int]:
        new = []
        for row in batch.scopes:
            if row.scope_id == 0:
                new.append(self._next_scope_id)
                self._new_scopes.append(_copy_scope(row, scope_id=self._next_scope_id))
                self._next_scope_id += 1
        self._actions.append(("events", list(batch.events)))
        self._actions.append(("upsert", list(batch.current)))
        self._actions.append(("scopes", [_copy_scope(r) for r in batch.scopes if r.scope_id]))
        self._actions.append(("idempotent", list(batch.idempotent)))
        if batch.head is not None:
            self._actions.append(("head", replace(batch.head)))
        return new

    async def delete_current(
        self, keys: Keys = (), *, keys_at: KeysAt = (), scope_ids: Ids = (), every: bool = False
    ) -> None:
        if every:
            self._actions.append(("clear_all", None))
        if scope_ids:
            self._actions.append(("clear", list(scope_ids)))
        if keys or keys_at:
            at = [*((scope_id, key, None) for scope_id, key in keys), *keys_at]
            self._actions.append(("delete", at))

    async def delete_idempotent(self, *, recorded_before: int, limit: int) -> int:
        table = self._data.idempotent
        old = [key for key, row in table.items() if row.recorded_at < recorded_before][:limit]
        self._actions.append(("forget", old))
        return len(old)

    async def delete_events(self, seqs: Sequence[int]) -> int:
        gone = set(seqs)
        self._actions.append(("delete_events", gone))
        return sum(1 for e in self._data.events if e.seq in gone)

    async def update_stored(
        self, *, payloads: shape.Payloads = (), values: shape.Values = ()
    ) -> None:
        self._actions.append(("payloads", list(payloads)))
        self._actions.append(("values", list(values)))

    def commit(self) -> None:
        data = self._data
        changes = _KeyChanges(data)
        for row in self._new_scopes:
            data.scopes[row.scope_key] = row
            data.scopes_by_id[row.scope_id] = row
        for action, arg in self._actions:
            match action:
                case "events":
                    data.events.extend(arg)  # type: ignore[arg-type]
                    for event in arg:  # type: ignore[attr-defined]
                        data.scope_events.setdefault(event.scope_id, []).append(event)
                case "upsert":
                    for current in arg:  # type: ignore[attr-defined]
                        rows = data.current.setdefault(current.scope_id, {})
                        if current.key not in rows:
                            changes.add(current.scope_id, current.key)
                        rows[current.key] = current
                case "delete":
                    # A seq of None removes the row whichever event wrote it.
                    for scope_id, key, seq in arg:  # type: ignore[attr-defined]
                        rows = data.current.get(scope_id, {})
                        found = rows.get(key)
                        if found is not None and seq in (None, found.seq):
                            del rows[key]
                            changes.remove(scope_id, key)
                case "clear":
                    for scope_id in arg:  # type: ignore[attr-defined]
                        data.current.pop(scope_id, None)
                        data.sorted_keys.pop(scope_id, None)
                case "scopes":
                    # The head fields only, as the SQL backends' UPDATE: a scope keeps its parts.
                    for row in arg:  # type: ignore[attr-defined]
                        old = data.scopes_by_id.get(row.scope_id)
                        if old is not None:
                            row = replace(
                                old,
                                version=row.version,
                                max_try=row.max_try,
                                updated_at=row.updated_at,
                            )
                        data.scopes[row.scope_key] = row
                        data.scopes_by_id[row.scope_id] = row
                case "idempotent":
                    for row in arg:  # type: ignore[attr-defined]
                        data.idempotent[(row.scope_id, row.idempotency_id)] = row
                case "forget":
                    for key in arg:  # type: ignore[attr-defined]
                        data.idempotent.pop(key, None)
                case "clear_all":
                    data.current = {}
                    data.sorted_keys = {}
                case "head":
                    data.head = arg  # type: ignore[assignment]
                case "delete_events":
                    touched = {e.scope_id for e in data.events if e.seq in arg}  # type: ignore[operator]
                    data.events = [e for e in data.events if e.seq not in arg]  # type: ignore[operator]
                    for scope_id in touched:
                        data.scope_events[scope_id] = [
                            e
                            for e in data.scope_events.get(scope_id, [])
                            if e.seq not in arg  # type: ignore[operator]
                        ]
                case "payloads":
                    where = {e.seq: i for i, e in enumerate(data.events)}
                    for seq, payload in arg:  # type: ignore[attr-defined]
                        if seq in where:
                            i = where[seq]
                            data.events[i] = replace(data.events[i], payload=payload)
                            _replace_in_scope(data, data.events[i])
                case "values":
                    for value, scope_id, key, seq in arg:  # type: ignore[attr-defined]
                        rows = data.current.get(scope_id, {})
                        found = rows.get(key)
                        if found is not None and found.seq == seq:
                            rows[key] = replace(found, value=value)
        changes.apply()


class MemoryBackend(LogBackend):
    def __init__(self) -> None:
        self._data = _Data()
        self._lock = anyio.Lock()
        self._closed = False

    @asynccontextmanager
    async def write(self) -> AsyncIterator[WriteTransaction]:
        self._check_open()
        async with self._lock:
            tx = _MemoryTransaction(self._data)
            yield tx
            tx.commit()

    async def select_scopes(self, where: shape.ScopeFilter | None = None) -> list[ScopeRow]:
        self._check_open()
        if where is None:
            return [_copy_scope(r) for r in sorted(self._data.scopes_by_id.values(), key=_by_id)]
        if where.scope_key is not None:
            row = self._data.scopes.get(where.scope_key)
            found = [] if row is None or not where.matches(row) else [_copy_scope(row)]
        else:
            found = [_copy_scope(r) for r in self._data.scopes_by_id.values() if where.matches(r)]
        found.sort(key=lambda r: (r.updated_at, r.scope_id), reverse=True)
        return found[: where.limit]

    async def select_current(
        self, scope_id: int | None = None, where: shape.CurrentFilter = shape.EVERY_ROW
    ) -> list[CurrentRow]:
        self._check_open()
        if scope_id is None:
            rows = [row for rows in self._data.current.values() for row in rows.values()]
            return [r for r in rows if where.matches(r)][: where.limit]
        scope = self._data.current.get(scope_id, {})
        if where.key is not None:
            row = scope.get(where.key)
            return [] if row is None else where.keep([row])
        keys = self._data.keys_of(scope_id)
        after = where.after_key
        start = 0 if after is None else bisect.bisect_right(keys, after)
        page: list[CurrentRow] = []
        for k in itertools.islice(keys, start, None):
            if where.limit is not None and len(page) >= where.limit:
                break
            if where.matches(scope[k]):
                page.append(scope[k])
        return page

    async def select_events(self, scope_id: int, where: shape.EventFilter) -> list[EventRow]:
        self._check_open()
        # The scope's own events from the cursor on, up to the limit: a page costs its size.
        events = self._data.scope_events.get(scope_id, [])
        start = 0
        if where.after_seq is not None:
            start = bisect.bisect_right(events, where.after_seq, key=lambda e: e.seq)
        indices = (
            range(len(events) - 1, start - 1, -1) if where.descending else range(start, len(events))
        )
        selected: list[EventRow] = []
        for i in indices:
            if where.limit is not None and len(selected) >= where.limit:
                break
            if where.matches(events[i]):
                selected.append(events[i])
        return selected

    async def select_markers(
        self, scope_ids: Collection[int], kinds: Collection[str], *, through_seq: int | None = None
    ) -> dict[tuple[int, str], EventRow]:
        self._check_open()
        found: dict[tuple[int, str], EventRow] = {}
        for scope_id in set(scope_ids):
            # The scope's events alone, newest first.
            for row in reversed(self._data.scope_events.get(scope_id, [])):
                if through_seq is not None and row.seq > through_seq:
                    continue
                if row.key is None and row.kind in kinds:
                    found.setdefault((scope_id, row.kind), row)
        return found

    async def select_latest_per_key(
        self, scope_id: int, *, after_seq: int, through_seq: int
    ) -> list[EventRow]:
        self._check_open()
        events = self._data.events
        start = bisect.bisect_right(events, after_seq, key=lambda e: e.seq)
        end = bisect.bisect_right(events, through_seq, key=lambda e: e.seq)
        latest: dict[str, EventRow] = {}
        for row in events[start:end]:
            if row.scope_id == scope_id and row.key is not None:
                latest[row.key] = row
        return [latest[k] for k in sorted(latest)]

    async def select_all_events(
        self, *, after_seq: int = 0, batch: int = 1000
    ) -> AsyncIterator[EventRow]:
        self._check_open()
        events = self._data.events
        start = bisect.bisect_right(events, after_seq, key=lambda e: e.seq)
        for row in events[start:]:
            yield row

    async def select_head(self) -> LogHead:
        self._check_open()
        return replace(self._data.head)

    async def select_storage(self, *, idempotent_before: int | None = None) -> shape.Storage:
        self._check_open()
        # An estimate: the stored bytes of every row plus a fixed overhead for its columns.
        data = self._data
        events = sum(len(e.payload) + _ROW_OVERHEAD for e in data.events)
        current = sum(
            len(r.value) + _ROW_OVERHEAD for rows in data.current.values() for r in rows.values()
        )
        idempotent = data.idempotent.values()
        kept = sum(len(r.result) + _ROW_OVERHEAD for r in idempotent)
        before = idempotent_before
        old = 0 if before is None else sum(1 for r in idempotent if r.recorded_at < before)
        return shape.Storage(events + current + kept, old)

    async def aclose(self) -> None:
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError("in-memory log")


_ROW_OVERHEAD = 64


def _by_id(row: ScopeRow) -> int:
    return row.scope_id


def _replace_in_scope(data: _Data, event: EventRow) -> None:
    events = data.scope_events.get(event.scope_id, [])
    i = bisect.bisect_left(events, event.seq, key=lambda e: e.seq)
    if i < len(events) and events[i].seq == event.seq:
        events[i] = event


def _copy_scope(row: ScopeRow, *, scope_id: int | None = None) -> ScopeRow:
    return ScopeRow(
        scope_id=row.scope_id if scope_id is None else scope_id,
        scope_key=row.scope_key,
        version=row.version,
        max_try=row.max_try,
        updated_at=row.updated_at,
        dag_id=row.dag_id,
        run_id=row.run_id,
        task_id=row.task_id,
        map_index=row.map_index,
    )
