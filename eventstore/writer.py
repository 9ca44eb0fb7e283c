"""Group commit: one writer drains the appends of every concurrent caller into one transaction.

Callers join the batch that is filling; the writer commits batches one at a time, oldest first,
each in one transaction, and wakes the callers of a batch together, each with its own result or
its own error. Waking a batch is one event, not one per caller: at tens of thousands of writes a
second the bookkeeping per write is what costs.

The number of queued writes is bounded (`max_pending`): a caller that finds the queue full waits
for room (back-pressure) instead of growing memory. Closing the writer lets it commit what is
queued; anything it cannot commit is failed, never left hanging.

A caller cancelled while it waits does not take its write back: once queued, it is committed
(or failed) with its batch, like a request whose client went away after sending it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from datetime import datetime

import anyio
import anyio.lowlevel
from anyio.abc import TaskStatus

from eventstore.backends.base import LogBackend
from eventstore.config import StoreConfig
from eventstore.crypto import Vault
from eventstore.errors import StoreClosedError
from eventstore.log import AppendRequest, AppendResult, append_batch

__all__ = ["GroupCommitWriter"]


class _Batch:
    """Appends committed together, and the one event their callers wait on."""

    __slots__ = ("done", "requests", "results")

    def __init__(self) -> None:
        self.requests: list[AppendRequest] = []
        self.results: list[AppendResult | BaseException] = []
        self.done = anyio.Event()

    def finish(self, results: list[AppendResult | BaseException]) -> None:
        self.results = results
        self.done.set()


class GroupCommitWriter:
    def __init__(
        self,
        backend: LogBackend,
        config: StoreConfig,
        clock: Callable[[], datetime],
        vault: Vault | None = None,
    ) -> None:
        self._backend = backend
        self._vault = vault
        self._config = config
        self._clock = clock
        self._batches: deque[_Batch] = deque()
        self._queued = 0  # appends in self._batches
        self._work = anyio.Event()  # set when the writer has something to do
        self._room = anyio.Event()  # set when queued appends were taken off the queue
        self._closing = False  # no new appends; the writer commits what is queued, then stops

    @property
    def queued(self) -> int:
        """Appends waiting for the writer, not counting the batch being committed."""
        return self._queued

    async def append(self, request: AppendRequest) -> AppendResult:
        while self._queued >= self._config.max_pending and not self._closing:
            room = self._room
            await room.wait()
        if self._closing:
            raise StoreClosedError()
        batches = self._batches
        if batches and len(batches[-1].requests) < self._config.max_batch:
            batch = batches[-1]
        else:
            batch = _Batch()
            batches.append(batch)
        index = len(batch.requests)
        batch.requests.append(request)
        self._queued += 1
        self._work.set()
        await batch.done.wait()
        result = batch.results[index]
        if isinstance(result, BaseException):
            raise result
        return result

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Commit batches until the writer is closed and its queue is empty."""
        task_status.started()
        batches = self._batches
        try:
            while True:
                if not batches:
                    if self._closing:
                        return
                    self._work = anyio.Event()
                    await self._work.wait()
                    continue
                batch = batches.popleft()
                self._queued -= len(batch.requests)
                self._room.set()
                self._room = anyio.Event()
                # A commit in flight finishes even when the store is being cancelled, so no
                # caller is told "failed" about a write that did land.
                with anyio.CancelScope(shield=True):
                    await self._commit(batch)
                # Let the callers just woken run before the next batch is taken: a task that
                # checkpoints in a loop queues its next write now, so it joins that batch.
                await anyio.lowlevel.checkpoint()
        finally:
            self._stop()

    async def _commit(self, batch: _Batch) -> None:
        results: list[AppendResult | BaseException]
        try:
            results = await append_batch(
                self._backend, batch.requests, self._config, self._clock(), self._vault
            )
        except Exception as error:  # the transaction failed: every caller in it hears why
            results = [error] * len(batch.requests)
        batch.finish(results)

    def _stop(self) -> None:
        self._closing = True
        while self._batches:
            batch = self._batches.popleft()
            batch.finish([StoreClosedError() for _ in batch.requests])
        self._queued = 0
        # Callers still waiting for room now fail with StoreClosedError.
        self._room.set()

    async def aclose(self) -> None:
        """Stop taking writes; the writer commits what is queued, then returns."""
        self._closing = True
        self._work.set()
        self._room.set()
