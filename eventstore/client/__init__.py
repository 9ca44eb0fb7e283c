"""The store's accessor API over HTTP, for task code on other machines.

    async with connect("http://127.0.0.1:8750", token=token) as remote:
        ts = remote.task_store("my_dag", "run_1", "ingest")
        await ts.set("job_id", "spark-123")
        await ts.get("job_id")

Every write carries an idempotency id (made here unless given), so a write whose response is
lost is retried without being recorded twice. Connection errors and 5xx answers are retried
with exponential backoff, a bounded number of times. Errors come back as the exception classes
the embedded store raises (ConcurrencyError, StaleAttemptError, NoneValueError, …); auth and
other service answers raise `ServiceError` subclasses. Values and keys are checked here first,
with the same errors, so a bad value never leaves the process.

`connect_blocking` gives the same API as plain calls for sync code. Needs the `service` extra.
"""

from __future__ import annotations

try:
    import aiohttp  # noqa: F401
    import yarl  # noqa: F401
except ImportError as e:
    raise ImportError(
        f"eventstore.client needs the service extra ({e.name} is missing): "
        "pip install 'tasktrail[service]'"
    ) from e

from eventstore.client.accessors import RemoteAssetStore, RemoteEntry, RemoteTaskStore
from eventstore.client.blocking import (
    BlockingRemote,
    BlockingRemoteAccessor,
    BlockingRemoteHistory,
    connect_blocking,
)
from eventstore.client.feed import RemoteSubscription
from eventstore.client.history import RemoteHistory
from eventstore.client.remote import Remote, connect
from eventstore.client.transport import (
    AuthenticationError,
    PermissionDeniedError,
    ServiceError,
    ServiceUnavailableError,
    new_idempotency_id,
)

__all__ = [
    "AuthenticationError",
    "BlockingRemote",
    "BlockingRemoteAccessor",
    "BlockingRemoteHistory",
    "PermissionDeniedError",
    "Remote",
    "RemoteAssetStore",
    "RemoteEntry",
    "RemoteHistory",
    "RemoteSubscription",
    "RemoteTaskStore",
    "ServiceError",
    "ServiceUnavailableError",
    "connect",
    "connect_blocking",
    "new_idempotency_id",
]
