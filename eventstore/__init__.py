"""tasktrail: an async, event-sourced key/value store for task checkpoints."""

from eventstore.blocking import BlockingStore, open_blocking_store
from eventstore.config import NEVER_EXPIRE, StoreConfig
from eventstore.crypto import ERASED, MASKED, generate_master_key
from eventstore.errors import (
    CompactionRunningError,
    ConcurrencyError,
    DecryptionError,
    EventStoreError,
    HistoryCompactedError,
    MasterKeyError,
    ReadOnlyStoreError,
    StaleAttemptError,
    StorageError,
    StoreClosedError,
)
from eventstore.events import RecordedEvent
from eventstore.log import AppendResult
from eventstore.scopes import AssetScope, Scope, TaskScope
from eventstore.store import AssetStore, Store, TaskStore, open_store

__all__ = [
    "ERASED",
    "MASKED",
    "NEVER_EXPIRE",
    "AppendResult",
    "AssetScope",
    "AssetStore",
    "BlockingStore",
    "CompactionRunningError",
    "ConcurrencyError",
    "DecryptionError",
    "EventStoreError",
    "HistoryCompactedError",
    "MasterKeyError",
    "ReadOnlyStoreError",
    "RecordedEvent",
    "Scope",
    "StaleAttemptError",
    "StorageError",
    "Store",
    "StoreClosedError",
    "StoreConfig",
    "TaskScope",
    "TaskStore",
    "generate_master_key",
    "open_blocking_store",
    "open_store",
]
