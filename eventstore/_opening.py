"""`Opening`: what `open_store`, `connect` and friends return, usable in two ways.

    async with open_store(url) as store:      # closed at the end of the block
        ...
    store = await open_store(url)             # kept on an object, closed by its owner
    ...
    await store.aclose()

As aiosqlite's `connect()` does. Nothing is opened until the object is awaited or entered, and
nothing of the resource is bound to the task that opened it: it may be closed from another.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Generator
from types import TracebackType
from typing import Any, Generic, Protocol, TypeVar

__all__ = ["Opening"]


class AsyncClosable(Protocol):
    async def aclose(self) -> None: ...


R = TypeVar("R", bound=AsyncClosable)


class Opening(Generic[R]):
    """An open not yet done: await it for the resource, or enter it to close it after the block."""

    __slots__ = ("_open", "_resource")

    def __init__(self, open_: Callable[[], Coroutine[Any, Any, R]]) -> None:
        self._open: Callable[[], Coroutine[Any, Any, R]] | None = open_
        self._resource: R | None = None

    def _start(self) -> Coroutine[Any, Any, R]:
        if self._open is None:
            raise RuntimeError("this open was awaited or entered already; call the opener again")
        open_, self._open = self._open, None
        return open_()

    def __await__(self) -> Generator[Any, None, R]:
        return self._start().__await__()

    async def __aenter__(self) -> R:
        self._resource = await self._start()
        return self._resource

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._resource is not None
        await self._resource.aclose()
