"""The sync methods' event loop: one bridge (`eventstore.bridge`) per process, and the stores (or
service connections) open on it, by the backend's key.

Started at the first call of the process, and again in a forked child, where the parent's thread
does not exist; closed at interpreter exit, which commits every queued write.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Awaitable, Callable, Hashable
from contextlib import AbstractAsyncContextManager
from typing import Any, Final, TypeVar

from eventstore.bridge import Bridge

__all__ = ["PROCESS_LOOP", "ProcessLoop"]

T = TypeVar("T")


class ProcessLoop:
    """One bridge per process, and what is open on it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._bridge: Bridge | None = None
        self._targets: dict[Hashable, Any] = {}
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
            if bridge is not None and self._pid != os.getpid():
                self._inherited.append(bridge)
                bridge = None
            self._pid = None
            self._targets = {}
        if bridge is not None:
            bridge.close()


PROCESS_LOOP: Final = ProcessLoop()
