"""The live feed: `store.subscribe(after_seq)` catches up from a position, then follows commits.

Why a subscriber never skips and never repeats a position
---------------------------------------------------------
Positions are handed out and committed in one order (docs/explanation/ordering-and-concurrency.md):
a reader that can see position p can see every position below p. A subscription keeps a cursor,
the last position it has handed on (or moved past), and reads "every event after the cursor", a
page at a time, in position order. Each page starts after the previous one ends, so nothing is
read twice; and since nothing below a visible position can still be in flight, nothing is
skipped. Positions missing from a page (compaction removed their events) stay missing.

The cursor may also move up to a position known to be committed (the log head, `Feed.head`),
when a read that began after that position was known returned less than a full page: every
event at or below it that still exists was in that read.

How a subscriber learns of new commits
--------------------------------------
- Commits of this store: `Store.append` tells the feed the position each write committed at,
  which wakes every waiting subscriber at once.
- Commits of other processes (SQLite) and other replicas (PostgreSQL): a waiting subscriber
  reads the log head (`LogBackend.select_head`, one row) after `poll_interval` seconds
  without news, which bounds the latency. One poll at a time per store, whatever the number of
  subscribers: a subscriber whose wait ends while another poll is under way, or after one that
  began since it started waiting, waits again instead.

Nothing here runs in a task of its own: a subscriber reads and waits in the task that iterates
it, so closing the store (from any task) wakes every waiting subscriber, and their iteration
ends. A slow consumer holds at most one page of events (`page`); the log is read only as fast
as it consumes them (back-pressure).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Final, Literal

import anyio
import msgspec
from anyio.abc import AsyncResource

from eventstore.log.backends.base import LogBackend
from eventstore.log.backends.rows import EventFilter, EventRow
from eventstore.log.events import RecordedEvent
from eventstore.log.recorded import recorded_event
from eventstore.log.scopes import AssetScope, Scope, TaskScope, scope_from_key, scope_key
from eventstore.log.vault import Vault

__all__ = ["DEFAULT_POLL_INTERVAL", "Feed", "ScopeMatch", "Subscription"]

DEFAULT_POLL_INTERVAL: Final = 0.05  # seconds: the latency bound for other processes' commits
DEFAULT_PAGE: Final = 500


class ScopeMatch(msgspec.Struct, frozen=True, kw_only=True):
    """Which scopes a subscription follows: every field given must match.

    `kind` "task" or "asset"; `dag_id`, `run_id`, `task_id`, `map_index` match task scopes
    (giving any of them leaves assets out).
    """

    kind: Literal["task", "asset"] | None = None
    dag_id: str | None = None
    run_id: str | None = None
    task_id: str | None = None
    map_index: int | None = None

    def matches(self, scope: Scope) -> bool:
        if isinstance(scope, AssetScope):
            return self.kind in (None, "asset") and not self._names_a_task()
        if self.kind == "asset":
            return False
        return (
            (self.dag_id is None or scope.dag_id == self.dag_id)
            and (self.run_id is None or scope.run_id == self.run_id)
            and (self.task_id is None or scope.task_id == self.task_id)
            and (self.map_index is None or scope.map_index == self.map_index)
        )

    def _names_a_task(self) -> bool:
        return any(v is not None for v in (self.dag_id, self.run_id, self.task_id, self.map_index))


class Feed:
    """What one store's subscribers share: the highest position known committed, and the wake-up.

    See the module docstring.
    """

    def __init__(
        self, backend: LogBackend, vault: Vault, poll_interval: float = DEFAULT_POLL_INTERVAL
    ) -> None:
        if not poll_interval > 0:
            raise ValueError(f"poll_interval must be > 0 seconds, got {poll_interval!r}")
        self.backend = backend
        self.vault = vault  # opens sealed values; its keys are the store's
        self.poll_interval = poll_interval
        self.head = 0  # the highest position known to have committed
        # Set (and dropped) whenever head moves, or on close; made by the first subscriber to
        # wait, so a commit nobody waits for wakes nothing (the writers commit thousands a second).
        self._tick: anyio.Event | None = None
        self._polling = False
        self._polled_at = -math.inf  # when the latest poll began (anyio.current_time())
        self.closed = False

    def committed(self, seq: int) -> None:
        """Position `seq` has committed: wake the subscribers waiting below it."""
        if seq > self.head:
            self.head = seq
            self._wake()

    def close(self) -> None:
        """Wake every waiting subscriber for good; they end their iteration."""
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        tick, self._tick = self._tick, None
        if tick is not None:
            tick.set()

    async def wait_beyond(self, seq: int) -> bool:
        """Return True once a position after `seq` is known committed; False once closed."""
        while not self.closed:
            if self.head > seq:
                return True
            tick = self._tick
            if tick is None:
                tick = self._tick = anyio.Event()
            began = anyio.current_time()
            with anyio.move_on_after(self.poll_interval):
                await tick.wait()
            if tick.is_set() or self._polling or self._polled_at >= began:
                continue  # news, or another subscriber's poll is (or was just) asking
            self._polling = True
            self._polled_at = anyio.current_time()
            try:
                head = (await self.backend.select_head()).last_seq
            finally:
                self._polling = False
            self.committed(head)
        return False


class Subscription(AsyncResource):
    """An async iterator of `RecordedEvent`s in position order; get one from `store.subscribe`.

    `async with store.subscribe(...) as events:` closes it at the end of the block; so does
    `aclose()`. Its iteration ends when the store closes.
    """

    def __init__(
        self,
        feed: Feed,
        scope_id: Callable[[Scope], Awaitable[int | None]],
        *,
        after_seq: int = 0,
        scope: Scope | ScopeMatch | None = None,
        page: int = DEFAULT_PAGE,
        mask: bool = False,
        through_seq: int | None = None,
    ) -> None:
        if through_seq is not None and (type(through_seq) is not int or through_seq < 0):
            raise ValueError(f"through_seq must be an int >= 0 or None, got {through_seq!r}")
        if type(after_seq) is not int or after_seq < 0:
            raise ValueError(f"after_seq must be an int >= 0, got {after_seq!r}")
        if not isinstance(scope, TaskScope | AssetScope | ScopeMatch | None):
            raise TypeError(
                f"scope must be a TaskScope, an AssetScope or a ScopeMatch, got {scope!r}"
            )
        if type(page) is not int or page < 1:
            raise ValueError(f"page must be an int >= 1, got {page!r}")
        self._backend = feed.backend
        self._vault = feed.vault
        self._feed = feed
        self._scope_id = scope_id  # the store's, with its cache
        self._read_to = after_seq  # the next read is of the events after this position
        self._scope = scope
        self._page = page
        self._mask = mask
        self._through = through_seq  # stop after this position (None: follow for ever)
        self._buffer: deque[RecordedEvent] = deque()
        self._scopes: dict[int, Scope] = {}  # scope_id -> scope, for the whole log's events
        self._keys: dict[int, str] = {}  # scope_id -> its scope key (values are sealed with it)
        self._erased: dict[int, int] = {}  # scope_id -> position of its last erasure
        self._closed = False

    def __repr__(self) -> str:
        return f"<Subscription after {self.position} of {describe(self._scope)}>"

    @property
    def position(self) -> int:
        """Where to resume: every event of the subscription up to here was handed on, and
        the positions between them are not the subscription's (other scopes, or compacted)."""
        return self._buffer[0].seq - 1 if self._buffer else self._read_to

    def __aiter__(self) -> Subscription:
        return self

    async def aclose(self) -> None:
        """Stop: the iteration ends; idempotent."""
        self._closed = True
        self._buffer.clear()

    async def __anext__(self) -> RecordedEvent:
        """The next event; safe to cancel (e.g. `anyio.move_on_after`): none is lost."""
        while True:
            if self._buffer:
                return self._buffer.popleft()
            if self._closed or self._feed.closed:
                raise StopAsyncIteration
            if self._through is not None and self._read_to >= self._through:
                raise StopAsyncIteration
            try:
                more = await self._fill()
            except Exception:
                if self._feed.closed:  # the store closed under the read
                    raise StopAsyncIteration from None
                raise
            if not more and not await self._feed.wait_beyond(self._read_to):
                raise StopAsyncIteration

    async def _fill(self) -> bool:
        """Read the next page after the cursor; False when the log holds nothing more yet."""
        known = self._feed.head  # committed before the read below begins
        if isinstance(self._scope, TaskScope | AssetScope):
            rows = await self._scope_rows(self._scope)
        else:
            rows = await self._all_rows()
        if rows is None:  # the scope was never written to, up to `known` at least
            self._read_to = max(self._read_to, known)
            return False
        full = len(rows) == self._page
        through = self._through
        if through is not None:
            if rows and rows[-1].seq > through:  # the read passed the end: it has all up to it
                full, known = False, through
                rows = [row for row in rows if row.seq <= through]
            known = min(known, through)
        await self._learn_scopes(rows)
        events = []
        for row in rows:
            if not self._matches(row):
                continue
            if row.kind == "set" and self._vault is not None:
                # Before each row: an erasure met in this page may have dropped the keys.
                key = self._scope_key(row.scope_id)
                if self._vault.unready(key):
                    await self._vault.ready({key: None})
            events.append(self._event(row))
        # No await from here on: a read cancelled above (a timeout at the caller) leaves the
        # subscription as it was, and the same events are read again next time.
        self._buffer.extend(events)
        last = rows[-1].seq if rows else 0
        # Everything still in the log up to `known` was in this read, unless it was cut short.
        self._read_to = max(self._read_to, last if full else max(last, known))
        return full or bool(self._buffer)

    async def _scope_rows(self, scope: Scope) -> list[EventRow] | None:
        scope_id = await self._scope_id(scope)
        if scope_id is None:
            return None
        self._scopes[scope_id] = scope
        return await self._backend.select_events(
            scope_id, EventFilter(after_seq=self._read_to, limit=self._page)
        )

    async def _all_rows(self) -> list[EventRow]:
        rows: list[EventRow] = []
        stream = self._backend.select_all_events(after_seq=self._read_to, batch=self._page)
        try:
            async for row in stream:
                rows.append(row)
                if len(rows) == self._page:
                    break
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        return rows

    async def _learn_scopes(self, rows: list[EventRow]) -> None:
        """The scopes of a page's events, and where each was last erased: two reads at most."""
        unknown = {row.scope_id for row in rows if row.scope_id not in self._scopes}
        if unknown:
            for found in await self._backend.select_scopes():
                self._scopes[found.scope_id] = scope_from_key(found.scope_key)
                self._keys[found.scope_id] = found.scope_key
            missing = unknown - self._scopes.keys()
            if missing:
                raise AssertionError(f"the log has events of scope ids {missing} but no scopes")
        fresh = {row.scope_id for row in rows if row.scope_id not in self._erased}
        if fresh:
            erased = await self._backend.select_markers(fresh, ["erased"])
            for scope_id in fresh:
                marker = erased.get((scope_id, "erased"))
                self._erased[scope_id] = 0 if marker is None else marker.seq

    def _scope_key(self, scope_id: int) -> str:
        key = self._keys.get(scope_id)
        if key is None:
            key = self._keys[scope_id] = scope_key(self._scopes[scope_id])
        return key

    def _matches(self, row: EventRow) -> bool:
        """Whether the row's scope is one the subscription follows (its keys are fetched, its
        erasures kept track of, only then)."""
        match = self._scope
        return not isinstance(match, ScopeMatch) or match.matches(self._scopes[row.scope_id])

    def _event(self, row: EventRow) -> RecordedEvent:
        scope = self._scopes[row.scope_id]
        erased = self._erased[row.scope_id]
        if row.kind == "erased":
            self._erased[row.scope_id] = max(erased, row.seq)
            self._vault.refresh()
        key = self._scope_key(row.scope_id)
        event = recorded_event(row, scope, self._vault, erased_before=erased, scope_key_=key)
        if self._mask and event.sensitive and event.value is not None:
            event = msgspec.structs.replace(event, value=None)
        return event


def describe(scope: Scope | ScopeMatch | None) -> str:
    if scope is None:
        return "every scope"
    if isinstance(scope, ScopeMatch):
        return repr(scope)
    return scope_key(scope)
