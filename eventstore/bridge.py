"""The one sync bridge: an event loop in a thread, which calls reach as tasks of its own.

Code without an event loop runs the store's coroutines here: the blocking facade
(`eventstore.blocking`) and the Airflow backend's sync methods. A `Bridge` owns its thread and
the async resources opened on it, through anyio's blocking portal (a store, a service
connection); `close()` closes them on that loop, newest first, then stops the thread. A call still
running when the loop stops is cancelled: its caller gets `concurrent.futures.CancelledError`.

    bridge = Bridge()
    store = bridge.enter(open_store(url))       # open on the bridge's loop, kept till close()
    bridge.call(store.task_store(...).set, "k", 1)
    bridge.close()
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import Any, TypeVar

import anyio
from anyio.from_thread import BlockingPortal

__all__ = ["Bridge"]

T = TypeVar("T")


class Bridge:
    """An event loop in a daemon thread, run by a blocking portal, and the resources opened on it.

    Any thread may call into it. The thread is a daemon and nothing of it is finalized at exit,
    so a bridge nobody closed does not hold the interpreter's shutdown (what it holds is then
    closed by nobody: owners close it, as the Airflow backend does at exit).
    """

    def __init__(self, name: str = "tasktrail-bridge") -> None:
        ready: Future[tuple[BlockingPortal, asyncio.AbstractEventLoop]] = Future()

        async def serve() -> None:
            async with BlockingPortal() as portal:
                ready.set_result((portal, asyncio.get_running_loop()))
                await portal.sleep_until_stopped()

        def run() -> None:
            try:
                anyio.run(serve)
            except BaseException as error:
                if not ready.done():
                    ready.set_exception(error)
                raise

        # Not `start_blocking_portal()`: a context manager left open is finalized at exit, and
        # its finalizer waits for a thread the interpreter no longer runs.
        self._thread = threading.Thread(target=run, name=name, daemon=True)
        self._thread.start()
        self.portal, self._loop = ready.result()
        self._opened: list[AbstractContextManager[Any]] = []
        self._closed = False

    def call(self, func: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run `func(*args)` on the bridge's loop and wait for its result."""
        if threading.get_ident() == self._thread.ident:
            raise RuntimeError("Bridge.call from the bridge's own thread would wait for itself")
        # A task of the loop's own, not the portal's: the portal makes a cancel scope and a task
        # in its task group per call, about as much work as the hand-off between the threads,
        # which a sync caller (Airflow's backend) pays on every request.
        return asyncio.run_coroutine_threadsafe(_awaited(func, args), self._loop).result()

    def enter(self, resource: AbstractAsyncContextManager[T]) -> T:
        """Enter an async context manager on the bridge's loop; it is exited by `close()`."""
        entered = self.portal.wrap_async_context_manager(resource)
        value = entered.__enter__()
        self._opened.append(entered)
        return value

    def close(self) -> None:
        """Exit what was entered, newest first, then stop the loop; idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            while self._opened:
                self._opened.pop().__exit__(None, None, None)
        finally:
            self.portal.call(self.portal.stop)
            self._thread.join()


async def _awaited(func: Callable[..., Awaitable[T]], args: tuple[Any, ...]) -> T:
    return await func(*args)
