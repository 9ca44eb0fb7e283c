"""tasktrail: an async, event-sourced key/value store for task checkpoints.

This package holds the log floor (`eventstore.log`: scopes, events, errors, config, the live
feed, backends) and the faces (the store API, the service, the client, the CLI), with
`projections` between them. So that `projections` can import the log floor without pulling in
the faces that import it back, the store API's names are imported when first used (PEP 562),
not by this `__init__`.
"""

import importlib
from typing import TYPE_CHECKING, Any

from eventstore.log.config import NEVER_EXPIRE, StoreConfig
from eventstore.log.envelope import ERASED, MASKED
from eventstore.log.errors import (
    ArchiveError,
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
from eventstore.log.events import RecordedEvent
from eventstore.log.feed import ScopeMatch, Subscription
from eventstore.log.master_keys import generate_master_key
from eventstore.log.requests import AppendResult
from eventstore.log.scopes import AssetScope, Scope, TaskScope

if TYPE_CHECKING:
    from eventstore.blocking import BlockingStore, open_blocking_store
    from eventstore.store import AssetStore, Store, TaskStore, open_store

__all__ = [
    "ERASED",
    "MASKED",
    "NEVER_EXPIRE",
    "AppendResult",
    "ArchiveError",
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
    "ScopeMatch",
    "StaleAttemptError",
    "StorageError",
    "Store",
    "StoreClosedError",
    "StoreConfig",
    "Subscription",
    "TaskScope",
    "TaskStore",
    "generate_master_key",
    "open_blocking_store",
    "open_store",
]

# The faces, imported on first use: name -> module.
_FACE = {
    "AssetStore": "eventstore.store",
    "BlockingStore": "eventstore.blocking",
    "Store": "eventstore.store",
    "TaskStore": "eventstore.store",
    "open_blocking_store": "eventstore.blocking",
    "open_store": "eventstore.store",
}


def __getattr__(name: str) -> Any:
    module = _FACE.get(name)
    if module is None:
        raise AttributeError(f"module 'eventstore' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_FACE})
