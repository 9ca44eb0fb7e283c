"""The live feed through the service: GET /api/v1/events (Server-Sent Events)."""

from __future__ import annotations

import asyncio
from typing import Final
from urllib.parse import urlencode

import aiohttp
import msgspec
from anyio.abc import AsyncResource
from yarl import URL

from eventstore.client.transport import ServiceUnavailableError, Transport, error_of
from eventstore.log.events import RecordedEvent
from eventstore.log.feed import ScopeMatch
from eventstore.log.scopes import AssetScope, Scope, TaskScope

__all__ = ["RemoteSubscription"]

_decode_event = msgspec.json.Decoder(RecordedEvent).decode
# A stream that has sent nothing, not even a heartbeat, for this long is taken as lost.
_STREAM_SILENCE: Final = 35.0


class RemoteSubscription(AsyncResource):
    """Events of GET /api/v1/events, one at a time, reconnecting when the stream breaks.

    Resumes after the last position the stream named (an event's id, or a heartbeat's), so no
    event is repeated or skipped across reconnects. The iteration ends on `aclose()`.
    """

    def __init__(self, remote: Transport, after_seq: int, scope: Scope | ScopeMatch | None) -> None:
        if type(after_seq) is not int or after_seq < 0:
            raise ValueError(f"after_seq must be an int >= 0, got {after_seq!r}")
        self.remote = remote
        self.position = after_seq  # the last position the stream named
        self._scope = scope
        self._query = _feed_query(scope)
        self._response: aiohttp.ClientResponse | None = None
        self._closed = False
        self._failures = 0

    def __aiter__(self) -> RemoteSubscription:
        return self

    async def aclose(self) -> None:
        self._closed = True
        response, self._response = self._response, None
        if response is not None:
            response.release()
            response.close()

    async def __anext__(self) -> RecordedEvent:
        while not self._closed:
            try:
                if self._response is None:
                    self._response = await self._connect()
                event = await self._read(self._response)
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as e:
                await self._drop()
                self._failures += 1
                if self._failures > self.remote.retries:
                    raise ServiceUnavailableError(
                        0, "unreachable", f"the event stream broke {self._failures} times: {e!r}"
                    ) from e
                await asyncio.sleep(min(2.0, self.remote.backoff * 2**self._failures))
                continue
            if event is None:  # the service ended the stream (shutting down): reconnect
                await self._drop()
                continue
            self._failures = 0
            if isinstance(self._scope, AssetScope) and event.scope != self._scope:
                continue
            return event
        raise StopAsyncIteration

    async def _drop(self) -> None:
        response, self._response = self._response, None
        if response is not None:
            response.close()

    async def _connect(self) -> aiohttp.ClientResponse:
        remote = self.remote
        url = URL(remote._base + "/api/v1/events?" + urlencode(self._query), encoded=True)
        response = await remote._session.get(
            url,
            headers={"Accept": "text/event-stream", "Last-Event-ID": str(self.position)},
            timeout=aiohttp.ClientTimeout(total=None, sock_read=_STREAM_SILENCE),
        )
        if response.status != 200:
            content = await response.read()
            response.close()
            raise error_of(response.status, content, None)
        return response

    async def _read(self, response: aiohttp.ClientResponse) -> RecordedEvent | None:
        """The next event of the stream; None when the stream ended."""
        event_id: str | None = None
        data: list[bytes] = []
        while True:
            line = await response.content.readline()
            if not line:
                return None
            line = line.rstrip(b"\r\n")
            if line:
                field, _, value = line.partition(b":")
                value = value.removeprefix(b" ")
                if field == b"id":
                    event_id = value.decode()
                elif field == b"data":
                    data.append(value)
                continue
            if event_id is not None and event_id.isdigit():
                self.position = max(self.position, int(event_id))
            if data:
                return _decode_event(b"\n".join(data))
            event_id = None


def _feed_query(scope: Scope | ScopeMatch | None) -> dict[str, str]:
    match scope:
        case None:
            return {}
        case TaskScope():
            return {
                "dag": scope.dag_id,
                "run": scope.run_id,
                "task": scope.task_id,
                "map_index": str(scope.map_index),
            }
        case AssetScope():
            return {"kind": "asset"}  # the service filters by kind; the client by the asset
        case ScopeMatch():
            names = {
                "kind": scope.kind,
                "dag": scope.dag_id,
                "run": scope.run_id,
                "task": scope.task_id,
                "map_index": None if scope.map_index is None else str(scope.map_index),
            }
            return {k: v for k, v in names.items() if v is not None}
    raise TypeError(f"scope must be a TaskScope, an AssetScope or a ScopeMatch, got {scope!r}")
