"""A blocking facade over the async store, for sync task code.

The store runs on an event loop in a background thread (the bridge, `eventstore.bridge`: anyio's
blocking portal); every call here waits for its coroutine there. Method names and arguments are
the async API's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Generic, Protocol, TypeVar

from anyio.from_thread import BlockingPortal

from eventstore.accessors import ScopeOpener
from eventstore.bridge import Bridge
from eventstore.log.config import Clock, StoreConfig
from eventstore.log.events import RecordedEvent
from eventstore.log.requests import AppendResult
from eventstore.log.scopes import AssetScope, Scope, TaskScope
from eventstore.store import AssetStore, Store, TaskStore, open_store
from projections.compaction import CompactionReport
from projections.history import Diff, History
from projections.points import At
from projections.rewind import RewindResult
from projections.verify import VerifyReport

__all__ = ["BlockingAccessor", "BlockingHistory", "BlockingStore", "open_blocking_store"]


def open_blocking_store(
    url: str | None = None, config: StoreConfig | None = None, clock: Clock | None = None
) -> BlockingStore:
    """Open the store for code without an event loop.

    `with open_blocking_store("sqlite:///trail.db") as store:` closes it after the block;
    `store = open_blocking_store(url)` ... `store.close()` for code that keeps it (any thread).
    """
    bridge = Bridge("tasktrail-blocking")
    try:
        store = bridge.enter(open_store(url, config, clock))
    except BaseException:
        bridge.close()
        raise
    return BlockingStore(bridge, store)


class BlockingStore(ScopeOpener["BlockingAccessor[TaskStore]", "BlockingAccessor[AssetStore]"]):
    """The store as plain calls, run on an event loop in a thread of its own."""

    def __init__(self, bridge: Bridge, store: Store) -> None:
        self._bridge = bridge  # its loop holds the store open; close() closes both
        self.store = store

    def __enter__(self) -> BlockingStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Commit what is queued, close the store and stop its thread; idempotent."""
        self._bridge.close()

    def open_task(
        self, scope: TaskScope, try_number: int | None = None, actor: str = "task"
    ) -> BlockingAccessor[TaskStore]:
        return BlockingAccessor(self._bridge.portal, self.store.open_task(scope, try_number, actor))

    def open_asset(self, scope: AssetScope, actor: str = "task") -> BlockingAccessor[AssetStore]:
        return BlockingAccessor(self._bridge.portal, self.store.open_asset(scope, actor))

    def history(self, scope: Scope) -> BlockingHistory[History]:
        return BlockingHistory(self._bridge.portal, self.store.history(scope))

    def verify(self) -> VerifyReport:
        return self._bridge.call(self.store.verify)

    def compact(self, dry_run: bool = False) -> CompactionReport:
        return self._bridge.call(partial(self.store.compact, dry_run))


class AsyncHistory(Protocol):
    """What the blocking facade wraps: a store's History or a RemoteHistory (eventstore.client)."""

    @property
    def state(self) -> Callable[[At], Awaitable[dict[str, Any]]]: ...
    @property
    def diff(self) -> Callable[[At, At], Awaitable[Diff]]: ...
    @property
    def events(self) -> Callable[..., Awaitable[list[RecordedEvent]]]: ...
    @property
    def rewind(self) -> Callable[..., Awaitable[RewindResult]]: ...


H = TypeVar("H", bound=AsyncHistory)


class BlockingHistory(Generic[H]):
    """A scope's history as plain calls: state, diff, events, and rewind."""

    def __init__(self, portal: BlockingPortal, history: H) -> None:
        self._portal = portal
        self._history = history

    def state(self, at: At) -> dict[str, Any]:
        return self._portal.call(self._history.state, at)

    def diff(self, a: At, b: At) -> Diff:
        return self._portal.call(self._history.diff, a, b)

    def events(self, **filters: Any) -> list[RecordedEvent]:
        return self._portal.call(partial(self._history.events, **filters))

    def rewind(self, at: At, **options: Any) -> RewindResult:
        """`History.rewind` (try_number, actor, expected_version, dry_run)."""
        return self._portal.call(partial(self._history.rewind, at, **options))


class AsyncAccessor(Protocol):
    """What the blocking facade wraps: an embedded accessor or a remote one (eventstore.client)."""

    @property
    def get(self) -> Callable[..., Awaitable[Any]]: ...
    @property
    def set(self) -> Callable[..., Awaitable[AppendResult]]: ...
    @property
    def set_many(self) -> Callable[..., Awaitable[AppendResult]]: ...
    @property
    def delete(self) -> Callable[..., Awaitable[AppendResult]]: ...
    @property
    def clear(self) -> Callable[..., Awaitable[AppendResult]]: ...
    @property
    def items(self) -> Callable[[], Awaitable[dict[str, Any]]]: ...
    @property
    def version(self) -> Callable[[], Awaitable[int]]: ...


A = TypeVar("A", bound=AsyncAccessor)


class BlockingAccessor(Generic[A]):
    """The accessor methods as plain calls: get, set, set_many, delete, clear, items."""

    def __init__(self, portal: BlockingPortal, accessor: A) -> None:
        self._portal = portal
        self._accessor = accessor

    def __repr__(self) -> str:
        return f"<blocking {self._accessor!r}>"

    def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self._portal.call(partial(method, *args, **kwargs))

    def get(self, key: str, default: Any = None) -> Any:
        return self._call(self._accessor.get, key, default)

    def set(self, key: str, value: object, **options: Any) -> AppendResult:
        result: AppendResult = self._call(self._accessor.set, key, value, **options)
        return result

    def set_many(self, values: dict[str, object], **options: Any) -> AppendResult:
        result: AppendResult = self._call(self._accessor.set_many, values, **options)
        return result

    def delete(self, key: str, **options: Any) -> AppendResult:
        result: AppendResult = self._call(self._accessor.delete, key, **options)
        return result

    def clear(self, *args: Any, **options: Any) -> AppendResult:
        result: AppendResult = self._call(self._accessor.clear, *args, **options)
        return result

    def items(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call(self._accessor.items)
        return result

    def version(self) -> int:
        result: int = self._call(self._accessor.version)
        return result
