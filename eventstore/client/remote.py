"""The connection to a service, and the accessors, histories and feeds made from it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Generic, TypeVar

import aiohttp

from eventstore._opening import Opening
from eventstore.client.accessors import RemoteAssetStore, RemoteTaskStore
from eventstore.client.feed import RemoteSubscription
from eventstore.client.history import RemoteHistory
from eventstore.client.transport import Transport
from eventstore.log.feed import ScopeMatch
from eventstore.log.scopes import AssetScope, Scope, TaskScope

__all__ = ["Remote", "RemoteScopeOpener", "connect"]


TaskT = TypeVar("TaskT", covariant=True)
AssetT = TypeVar("AssetT", covariant=True)


class RemoteScopeOpener(ABC, Generic[TaskT, AssetT]):
    """`task_store` and `asset_store` as the client and its blocking facade offer them (the
    store's, without `actor`: through a service the actor is the token's)."""

    def task_store(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        map_index: int = -1,
        try_number: int | None = None,
    ) -> TaskT:
        """The store of one task instance.

        Writes are stamped with the token's try. Given a `try_number`, the client says it with
        every write: the service refuses writes whose task token is for another try, and stamps
        an admin token's writes with it.
        """
        return self.open_task(TaskScope(dag_id, run_id, task_id, map_index), try_number)

    def asset_store(self, name: str | None = None, uri: str | None = None) -> AssetT:
        return self.open_asset(AssetScope(name, uri))

    @abstractmethod
    def open_task(self, scope: TaskScope, try_number: int | None = None) -> TaskT: ...

    @abstractmethod
    def open_asset(self, scope: AssetScope) -> AssetT: ...


class Remote(Transport, RemoteScopeOpener[RemoteTaskStore, RemoteAssetStore]):
    """A connection to a tasktrail service; make accessors with task_store and asset_store."""

    def open_task(self, scope: TaskScope, try_number: int | None = None) -> RemoteTaskStore:
        return RemoteTaskStore(self, scope, try_number)

    def open_asset(self, scope: AssetScope) -> RemoteAssetStore:
        return RemoteAssetStore(self, scope, None)

    def history(self, scope: Scope) -> RemoteHistory:
        """The history of a task or asset scope, read through the service."""
        return RemoteHistory(self, scope)

    def subscribe(
        self, after_seq: int = 0, scope: Scope | ScopeMatch | None = None
    ) -> RemoteSubscription:
        """`store.subscribe` through the service (GET /api/v1/events, Server-Sent Events):
        every event after `after_seq`, then each new one; reconnects by itself, resuming after
        the last position it got (Last-Event-ID). Close it with `aclose()` or `async with`."""
        return RemoteSubscription(self, after_seq, scope)


def connect(
    base_url: str,
    *,
    token: str,
    retries: int = 4,
    backoff: float = 0.05,
    request_timeout: float = 30.0,
    connections: int = 256,
) -> Opening[Remote]:
    """Connect to a tasktrail service at `base_url` with a bearer `token`.

    `async with connect(url, token=...) as remote:` closes the connection after the block;
    `remote = await connect(url, token=...)` ... `await remote.aclose()` (from any task).
    `retries` bounds the retries of one call (connection errors and 5xx); `backoff` is the first
    wait in seconds, doubled each retry up to 2 s, with jitter.
    """

    async def open_() -> Remote:
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=connections),
            headers={"Authorization": f"Bearer {token}"},
            timeout=aiohttp.ClientTimeout(total=request_timeout),
        )
        return Remote(session, base_url, retries=retries, backoff=backoff)

    return Opening(open_)
