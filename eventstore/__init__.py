"""tasktrail: an async, event-sourced key/value store for task checkpoints."""

from eventstore.blocking import BlockingStore, open_blocking_store
from eventstore.config import NEVER_EXPIRE, StoreConfig
from eventstore.errors import (
    ConcurrencyError,
    EventStoreError,
    HistoryCompactedError,
    StaleAttemptError,
    StoreClosedError,
)
from eventstore.events import RecordedEvent
from eventstore.log import AppendResult
from eventstore.scopes import AssetScope, Scope, TaskScope
from eventstore.store import AssetStore, Store, TaskStore, open_store

__all__ = [
    "NEVER_EXPIRE",
    "AppendResult",
    "AssetScope",
    "AssetStore",
    "BlockingStore",
    "ConcurrencyError",
    "EventStoreError",
    "HistoryCompactedError",
    "RecordedEvent",
    "Scope",
    "StaleAttemptError",
    "Store",
    "StoreClosedError",
    "StoreConfig",
    "TaskScope",
    "TaskStore",
    "open_blocking_store",
    "open_store",
]
