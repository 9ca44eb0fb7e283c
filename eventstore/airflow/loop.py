"""The sync methods' event loop: one bridge (`eventstore.bridge`) per process, the stores (or
service connections) open on it, by the backend's key, and the mirror writers running on it, by
that key and Airflow's database engine (`eventstore.airflow.writer`).

Started at the first call of the process, and again in a forked child, where the parent's thread
does not exist; closed at interpreter exit, which writes every queued mirror change and commits
every queued write.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Awaitable, Callable, Hashable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Final, TypeVar

from eventstore.airflow.writer import MirrorOp, MirrorWriter, has_written, lock_mirror
from eventstore.bridge import Bridge

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

__all__ = ["PROCESS_LOOP", "ProcessLoop"]

T = TypeVar("T")


class ProcessLoop:
    """One bridge per process, and what is open on it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._bridge: Bridge | None = None
        self._targets: dict[Hashable, Any] = {}
        self._writers: dict[tuple[Hashable, Any], MirrorWriter] = {}
        # What a forked child inherited from its parent: kept, never closed (there is no thread
        # to close it on).
        self._inherited: list[Bridge] = []

    def call(
        self,
        key: Hashable,
        opener: Callable[[], AbstractAsyncContextManager[Any]],
        operation: Callable[..., Awaitable[T]],
        *args: Any,
    ) -> T:
        """Run operation(target, *args) on the loop, with the target `opener` opens (once per
        key and process)."""
        bridge, target = self._open(key, opener)
        return bridge.call(operation, target, *args)

    def write(
        self,
        store: tuple[Hashable, Callable[[], AbstractAsyncContextManager[Any]], Any],
        session: Session,
        owned: bool,
        operation: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        mirror: Callable[[T], MirrorOp | None],
    ) -> T:
        """Run a log write on the loop, then queue its mirror change for the writer of the
        session's database (made, and started, at its first use in the process): the caller's
        session commits only what it read. `store`: the backend's key, opener, and the backend.

        A session of the backend's own (`owned`) answers once the change is written, as
        Airflow's own backend does. A caller's transaction that has written itself gets the
        change in it, as before: the caller sees the row there, and it commits or rolls back
        with what the caller wrote."""
        key, opener, owner = store
        engine = session.get_bind()
        bridge, target = self._open(key, opener)
        if not owned and has_written(session):
            result: T = bridge.call(operation, target, *args)
            change = mirror(result)
            if change is not None:
                connection = session.connection()
                lock_mirror(connection)
                self.supersede(engine, change)
                change.apply(connection)
            return result
        with self._lock:
            writer = self._writers.get((key, engine))
            if writer is None:
                writer = MirrorWriter(engine, target, owner)
                bridge.portal.start_task(writer.run)
                self._writers[(key, engine)] = writer
        result = bridge.call(writer.write, operation, args, mirror)
        if owned:
            bridge.call(writer.drain)
        return result

    def supersede(self, engine: Any, change: MirrorOp) -> None:
        """A change a caller's transaction made itself in `engine`'s database: queued changes it
        covers are not written after it."""
        with self._lock:
            writers = [w for (_, e), w in self._writers.items() if e is engine]
        for writer in writers:
            writer.supersede(change)

    def idle(self) -> bool:
        """Whether no mirror change queued in this process is left to write."""
        return all(writer.idle for writer in list(self._writers.values()))

    def drain(self) -> None:
        """Wait until every mirror change queued in this process so far is written."""
        with self._lock:
            bridge = self._bridge if self._pid == os.getpid() else None
            busy = [w for w in self._writers.values() if not w.idle]
        for writer in busy:
            assert bridge is not None
            bridge.call(writer.drain)

    def _open(
        self, key: Hashable, opener: Callable[[], AbstractAsyncContextManager[Any]]
    ) -> tuple[Bridge, Any]:
        with self._lock:
            if self._pid != os.getpid():
                if self._bridge is not None:
                    self._inherited.append(self._bridge)
                else:
                    atexit.register(self.close)
                self._bridge = Bridge("tasktrail-airflow")
                self._targets = {}
                self._writers = {}
                self._pid = os.getpid()
            assert self._bridge is not None
            target = self._targets.get(key)
            if target is None:
                target = self._targets[key] = self._bridge.enter(opener())
            return self._bridge, target

    def close(self) -> None:
        """Close every store and connection and stop the loop; idempotent, and a no-op in a
        forked child."""
        with self._lock:
            bridge, self._bridge = self._bridge, None
            writers = list(self._writers.values())
            if bridge is not None and self._pid != os.getpid():
                self._inherited.append(bridge)
                bridge = None
            self._pid = None
            self._targets = {}
            self._writers = {}
        if bridge is not None:
            try:
                for writer in writers:
                    bridge.call(writer.stop)
            finally:
                bridge.close()


PROCESS_LOOP: Final = ProcessLoop()
