"""Group commit, led by the callers themselves: no background task, nothing bound to one task.

Writers queue their appends in batches. The first writer to find nobody committing becomes the
leader: it takes the oldest batch off the queue, commits it in one transaction, wakes the
callers of that batch (each with its own result or its own error) and hands the lead to the
first caller of the next batch, who was queued behind it and commits everything that queued up
meanwhile (the writer queue of LevelDB and RocksDB). A lone writer commits its own write without
a task switch; under load every commit carries whoever queued during the previous one. Waking a
batch is one event, not one per caller: at tens of thousands of writes a second the
bookkeeping per write is what costs.

The number of queued writes is bounded (`max_pending`): a caller that finds the queue full waits
for room (back-pressure) instead of growing memory. Batches hold at most `max_batch` writes.

A caller cancelled while it waits does not take its write back: once queued, it is committed
(or failed) with its batch, like a request whose client went away after sending it. Leading is
shielded from cancellation: a leader cancelled mid-commit finishes the commit, wakes the batch
and hands the lead on before the cancellation reaches it. A next leader cancelled before its
turn gives the turn up, and the leader before it commits that batch too, so no queued write is
ever left without someone to commit it.

Closing stops new writes (they raise `StoreClosedError`, as do callers waiting for room), lets
the leaders commit what is queued, and returns when nothing is in flight.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from datetime import datetime

import anyio
import anyio.lowlevel

from eventstore.log.append import append_batch
from eventstore.log.backends.base import LogBackend
from eventstore.log.config import StoreConfig
from eventstore.log.errors import StoreClosedError
from eventstore.log.requests import AppendRequest, AppendResult
from eventstore.log.vault import Vault

__all__ = ["GroupCommitWriter"]


class _Batch:
    """Appends committed together, the events their callers wait on, and the turn of its head.

    The head is the caller that opened the batch (index 0); it waits on `turn`, set when the
    lead is handed to it or when its batch was committed by someone else. The other callers
    wait on `done`. Each event is made by the first caller that waits on it: a lone writer
    leads its own batch and waits on neither, so it makes none.
    """

    __slots__ = ("committed", "done", "handed", "head_gone", "requests", "results", "turn")

    def __init__(self) -> None:
        self.requests: list[AppendRequest] = []
        self.results: list[AppendResult | BaseException] = []
        self.committed = False  # results are in: every caller may read its own
        self.done: anyio.Event | None = None
        self.turn: anyio.Event | None = None
        self.handed = False  # the lead was handed to the head: it must commit this batch
        self.head_gone = False  # the head was cancelled before its turn: it leads nothing

    def finish(self, results: list[AppendResult | BaseException]) -> None:
        self.results = results
        self.committed = True
        if self.done is not None:
            self.done.set()
        if self.turn is not None:
            self.turn.set()

    def hand_lead(self) -> None:
        self.handed = True
        if self.turn is not None:
            self.turn.set()

    async def wait_turn(self) -> None:
        if not (self.committed or self.handed):
            if self.turn is None:
                self.turn = anyio.Event()
            await self.turn.wait()


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
        # True from the moment a caller takes the lead until the queue is empty: while batches
        # are queued, one caller is leading or has been handed the lead.
        self._leading = False
        # Set when queued appends were taken off the queue; made by the first caller that
        # waits for room, so a queue that never fills makes none.
        self._room: anyio.Event | None = None
        self._closing = False  # no new appends; the leaders commit what is queued
        self._idle: anyio.Event | None = None  # made by aclose; set when the last leader is done

    @property
    def queued(self) -> int:
        """Appends waiting to be committed, not counting the batch being committed."""
        return self._queued

    async def append(self, request: AppendRequest) -> AppendResult:
        while self._queued >= self._config.max_pending and not self._closing:
            room = self._room
            if room is None:
                room = self._room = anyio.Event()
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
        if not self._leading:
            # Nobody is committing, so the queue held nothing before this write: lead.
            self._leading = True
            await self._lead(batch, first=True)
        elif index == 0:
            await self._wait_for_turn(batch)
        else:
            done = batch.done
            if done is None:
                done = batch.done = anyio.Event()
            await done.wait()
        result = batch.results[index]
        if isinstance(result, BaseException):
            raise result
        return result

    async def _wait_for_turn(self, batch: _Batch) -> None:
        """The head of a batch: wait until the batch is committed or the lead comes to it."""
        try:
            await batch.wait_turn()
        except BaseException:
            # Cancelled. The head only leaves when no one is counting on it: a turn already
            # handed to it is taken (shielded), else the leader before it commits the batch.
            if batch.handed and not batch.committed:
                await self._lead(batch)
            else:
                batch.head_gone = True
            raise
        if not batch.committed:
            await self._lead(batch)

    async def _lead(self, batch: _Batch, *, first: bool = False) -> None:
        """Commit `batch` (the oldest queued), then hand the lead to the next batch's head.

        Shielded throughout: a commit in flight finishes even when its caller is cancelled, so
        no caller is told "failed" about a write that did land, and the lead always moves on.
        """
        batches = self._batches
        with anyio.CancelScope(shield=True):
            if first:
                # A leader that was not handed the lead first lets the tasks ready to run queue
                # their writes too: a commit that does not yield (SQLite's, on the loop thread)
                # would otherwise leave each of them a batch of one. Inside the shield, as the
                # commit: one cancel scope for both.
                await anyio.lowlevel.checkpoint()
            while True:
                assert batches[0] is batch, "the lead commits the oldest batch"
                batches.popleft()
                self._queued -= len(batch.requests)
                self._make_room()
                await self._commit(batch)
                if not batches:
                    self._leading = False
                    if self._idle is not None:
                        self._idle.set()
                    return
                batch = batches[0]
                if not batch.head_gone:
                    batch.hand_lead()
                    return
                # Its head was cancelled before its turn: commit this batch too, after letting
                # the callers just woken queue their next writes into it.
                await anyio.lowlevel.checkpoint()

    async def _commit(self, batch: _Batch) -> None:
        results: list[AppendResult | BaseException]
        try:
            results = await append_batch(
                self._backend, batch.requests, self._config, self._clock(), self._vault
            )
        except Exception as error:  # the transaction failed: every caller in it hears why
            results = [error] * len(batch.requests)
        except BaseException as error:
            # Interrupted (KeyboardInterrupt, SystemExit): whether the batch landed is unknown
            # and the leader is leaving, so the writer stops; no caller may be left waiting.
            self._stop(batch, error)
            raise
        batch.finish(results)

    def _make_room(self) -> None:
        """Wake the callers waiting for room in the queue, if any."""
        room = self._room
        if room is not None:
            self._room = None
            room.set()

    def _stop(self, batch: _Batch, error: BaseException) -> None:
        """Fail the batch being committed with `error`, and everything queued behind it."""
        self._closing = True
        batch.finish([error] * len(batch.requests))
        while self._batches:
            queued = self._batches.popleft()
            queued.finish([StoreClosedError() for _ in queued.requests])
        self._queued = 0
        self._leading = False
        self._make_room()
        if self._idle is not None:
            self._idle.set()

    async def aclose(self) -> None:
        """Stop taking writes; return once every queued write was committed (or failed).

        Callers waiting for room in a full queue fail with `StoreClosedError`. Idempotent; may
        be called from any task, also while another task is closing.
        """
        self._closing = True
        self._make_room()
        if self._leading:
            if self._idle is None:
                self._idle = anyio.Event()
            await self._idle.wait()
