"""Group commit: one writer drains the appends of every concurrent caller into one transaction.

Each caller waits for its own result or its own error. The queue is bounded, so a flood of
writers waits for room (back-pressure) instead of growing memory. Closing the writer lets it
commit what is queued; anything it cannot commit is failed, never left hanging.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from eventstore.backends.base import LogBackend
from eventstore.config import StoreConfig
from eventstore.errors import StoreClosedError
from eventstore.log import AppendRequest, AppendResult, append_batch

__all__ = ["GroupCommitWriter"]


class _Pending:
    __slots__ = ("done", "request", "result")

    def __init__(self, request: AppendRequest) -> None:
        self.request = request
        self.done = anyio.Event()
        self.result: AppendResult | BaseException | None = None


class GroupCommitWriter:
    def __init__(
        self, backend: LogBackend, config: StoreConfig, clock: Callable[[], datetime]
    ) -> None:
        self._backend = backend
        self._config = config
        self._clock = clock
        send, receive = anyio.create_memory_object_stream[_Pending](config.max_pending)
        self._send: MemoryObjectSendStream[_Pending] = send
        self._receive: MemoryObjectReceiveStream[_Pending] = receive

    async def append(self, request: AppendRequest) -> AppendResult:
        pending = _Pending(request)
        try:
            await self._send.send(pending)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            raise StoreClosedError() from None
        await pending.done.wait()
        result = pending.result
        if isinstance(result, BaseException):
            raise result
        assert result is not None
        return result

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Commit batches until the writer is closed and its queue is empty."""
        receive = self._receive
        limit = self._config.max_batch
        task_status.started()
        try:
            async for first in receive:
                batch = [first]
                while len(batch) < limit:
                    try:
                        batch.append(receive.receive_nowait())
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                # A commit in flight finishes even when the store is being cancelled, so no
                # caller is told "failed" about a write that did land.
                with anyio.CancelScope(shield=True):
                    await self._commit(batch)
        finally:
            self._fail_queued()

    async def _commit(self, batch: list[_Pending]) -> None:
        results: list[AppendResult | BaseException]
        try:
            results = await append_batch(
                self._backend, [p.request for p in batch], self._config, self._clock()
            )
        except Exception as error:  # the transaction failed: every caller in it hears why
            results = [error] * len(batch)
        for pending, result in zip(batch, results, strict=True):
            pending.result = result
            pending.done.set()

    def _fail_queued(self) -> None:
        while True:
            try:
                pending = self._receive.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                break
            pending.result = StoreClosedError()
            pending.done.set()
        # Callers still waiting for room in the queue now fail with StoreClosedError.
        self._receive.close()

    async def aclose(self) -> None:
        """Stop taking writes; the writer commits what is queued, then returns."""
        await self._send.aclose()
