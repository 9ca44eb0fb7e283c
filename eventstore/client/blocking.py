"""The client as plain calls, for code without an event loop."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

from anyio.from_thread import BlockingPortal, start_blocking_portal

from eventstore.blocking import BlockingAccessor, BlockingHistory
from eventstore.client.accessors import RemoteAssetStore, RemoteTaskStore
from eventstore.client.history import RemoteHistory
from eventstore.client.remote import Remote, RemoteScopeOpener, connect
from eventstore.log.events import RecordedEvent
from eventstore.log.scopes import AssetScope, Scope, TaskScope
from eventstore.store import AppendResult
from projections import TrySummary

__all__ = [
    "BlockingRemote",
    "BlockingRemoteAccessor",
    "BlockingRemoteHistory",
    "connect_blocking",
]


@contextmanager
def connect_blocking(base_url: str, *, token: str, **options: Any) -> Iterator[BlockingRemote]:
    """`with connect_blocking(url, token=...) as remote:` for code without an event loop."""
    with (
        start_blocking_portal() as portal,
        portal.wrap_async_context_manager(connect(base_url, token=token, **options)) as remote,
    ):
        yield BlockingRemote(portal, remote)


class BlockingRemote(RemoteScopeOpener["BlockingRemoteAccessor", "BlockingRemoteAccessor"]):
    def __init__(self, portal: BlockingPortal, remote: Remote) -> None:
        self._portal = portal
        self.remote = remote

    def open_task(self, scope: TaskScope, try_number: int | None = None) -> BlockingRemoteAccessor:
        return BlockingRemoteAccessor(self._portal, self.remote.open_task(scope, try_number))

    def open_asset(self, scope: AssetScope) -> BlockingRemoteAccessor:
        return BlockingRemoteAccessor(self._portal, self.remote.open_asset(scope))

    def history(self, scope: Scope) -> BlockingRemoteHistory:
        return BlockingRemoteHistory(self._portal, self.remote.history(scope))


class BlockingRemoteHistory(BlockingHistory[RemoteHistory]):
    """RemoteHistory as plain calls: the embedded facade's, plus timeline and tries."""

    def timeline(
        self, key: str, *, after_seq: int | None = None, limit: int | None = None
    ) -> list[RecordedEvent]:
        call = partial(self._history.timeline, key, after_seq=after_seq, limit=limit)
        return self._portal.call(call)

    def tries(self) -> list[TrySummary]:
        return self._portal.call(self._history.tries)


class BlockingRemoteAccessor(BlockingAccessor[RemoteTaskStore | RemoteAssetStore]):
    """The remote accessor methods as plain calls: the embedded facade's, plus patch."""

    def patch(self, key: str, value: object, **options: Any) -> AppendResult:
        result: AppendResult = self._call(self._accessor.patch, key, value, **options)
        return result
