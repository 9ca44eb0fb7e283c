"""GET /api/v1/events: the live feed as Server-Sent Events, resumable with Last-Event-ID.

Each event of the log is one SSE message: `id:` its position, `data:` the `RecordedEvent` as
JSON (as in a history page). The stream catches up from `after_seq` (or from the
`Last-Event-ID` a reconnecting client sends, which wins), then follows new commits
(`store.subscribe`). While nothing arrives, a message with only an `id:` (the position the
stream has read up to) goes out every `HEARTBEAT` seconds: it keeps proxies from closing the
connection and moves a filtered client's Last-Event-ID past events it does not get.

Who sees what: an auditor or admin every scope, a task token only its own task instance
(asking for another is a 403). A value written sensitive is null (the event says
`sensitive: true`) for everyone but admins and the task instance's own token, as on every read
route. The stream ends when the service shuts down; an EventSource reconnects by itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Final

import anyio
import msgspec
from starlette.responses import Response, StreamingResponse

from eventstore.feed import ScopeMatch
from eventstore.log.events import RecordedEvent
from eventstore.log.scopes import Scope, TaskScope
from eventstore.service.auth import Claims, sees_sensitive
from eventstore.service.errors import HTTPProblem
from eventstore.service.routes import MAX_MAP_INDEX, Call, Operation, Param

__all__ = ["FEED_OPERATIONS", "HEARTBEAT", "FeedMessage"]

HEARTBEAT: Final = 10.0  # seconds between keep-alive messages on a quiet stream
_encoder = msgspec.json.Encoder()


class FeedMessage(msgspec.Struct, kw_only=True):
    """One Server-Sent Events message of the stream (text/event-stream, not JSON).

    `id`: a position; `data`: the event at it, as JSON (a `RecordedEvent`, as in a history
    page). A message with an `id` and no `data` says the stream has read up to that position.
    """

    id: str | None = None
    data: str | None = None
    event: str | None = None
    retry: int | str | None = None


def _filters(call: Call) -> Scope | ScopeMatch | None:
    query = call.request.query_params
    names: dict[str, Any] = {}
    for field, param in (("dag_id", "dag"), ("run_id", "run"), ("task_id", "task")):
        if param in query:
            if not query[param]:
                raise HTTPProblem(422, "bad_query", f"{param} must not be empty; leave it out")
            names[field] = query[param]
    map_index = call.query_int("map_index", None, -1, MAX_MAP_INDEX)
    if map_index is not None:
        names["map_index"] = map_index
    kind = query.get("kind")
    if kind not in (None, "task", "asset"):
        raise HTTPProblem(422, "bad_query", f"kind must be task or asset, got {kind!r}")
    claims = call.claims
    assert claims is not None
    own = claims.task_scope() if claims.role == "task" else None
    if own is not None:
        # A task token follows its own task instance; naming another is refused, not emptied.
        mine = {"dag_id": own.dag_id, "run_id": own.run_id, "task_id": own.task_id}
        mine["map_index"] = own.map_index  # type: ignore[assignment]
        others = {k: v for k, v in names.items() if mine[k] != v}
        if others or kind == "asset":
            raise HTTPProblem(
                403, "forbidden", f"this task token is for {own}; it follows only its events"
            )
        return own
    if not names and kind is None:
        return None
    if {"dag_id", "run_id", "task_id"} <= names.keys() and "map_index" in names:
        return TaskScope(**names)
    return ScopeMatch(kind=kind, **names)  # type: ignore[arg-type]


def _after(call: Call) -> int:
    resumed = call.header("last-event-id")
    if resumed is not None and resumed.strip():
        text = resumed.strip()
        if not (text.isascii() and text.isdigit() and len(text) <= 18):
            raise HTTPProblem(
                422, "bad_header", f"Last-Event-ID must be a position, got {resumed!r}"
            )
        return int(text)
    after = call.query_int("after_seq", 0, 0, 2**62)
    assert after is not None
    return after


def _message(event: RecordedEvent, claims: Claims) -> bytes:
    if event.sensitive and event.value is not None and not sees_sensitive(claims, event.scope):
        event = msgspec.structs.replace(event, value=None)
    return b"id: %d\ndata: %s\n\n" % (event.seq, _encoder.encode(event))


async def follow(call: Call) -> Response:
    scope = _filters(call)
    after = _after(call)
    claims = call.claims
    assert claims is not None
    store = call.store
    subscription = store.subscribe(after_seq=after, scope=scope)

    async def stream() -> AsyncIterator[bytes]:
        sent = after
        yield b"retry: 1000\n\n"
        async with subscription:
            while True:
                event: RecordedEvent | None = None
                with anyio.move_on_after(HEARTBEAT):
                    try:
                        event = await subscription.__anext__()
                    except StopAsyncIteration:
                        return
                if event is None:
                    position = subscription.position
                    if position > sent:
                        sent = position
                        yield b"id: %d\n\n" % position
                    else:
                        yield b": keep-alive\n\n"
                    continue
                sent = event.seq
                yield _message(event, claims)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


_STR: Final = {"type": "string", "minLength": 1}

FEED_OPERATIONS: Final[list[Operation]] = [
    Operation(
        "GET",
        "/api/v1/events",
        "follow_events",
        "Every event after a position, then each new one as it commits, as Server-Sent Events "
        "(id: the position; data: the event as in a history page); resumable with "
        "Last-Event-ID. A task token follows only its own task instance",
        follow,
        "history",
        action="feed",
        params=(
            Param("after_seq", "query", {"type": "integer", "minimum": 0}, "start after this"),
            Param("kind", "query", {"enum": ["task", "asset"]}, "only task instances or assets"),
            Param("dag", "query", _STR, "only task instances of this DAG"),
            Param("run", "query", _STR, "only task instances of this run"),
            Param("task", "query", _STR, "only task instances of this task"),
            Param(
                "map_index",
                "query",
                {"type": "integer", "minimum": -1, "maximum": MAX_MAP_INDEX},
                "only this map index",
            ),
            Param(
                "Last-Event-ID",
                "header",
                {"type": "string", "pattern": "^[0-9]{1,18}$"},
                "resume after this position (an EventSource sends it when it reconnects); "
                "wins over after_seq",
            ),
        ),
        response=FeedMessage,
        statuses=(401, 403, 422),
        media_type="text/event-stream",
    )
]
