"""The history routes of every scope: events, state as of a point, diff, timeline, tries.

A point is one query parameter: `seq=41`, `version=7`, `at=2026-01-01T00:00:00Z` (a time),
`end_of_try=1` or `start_of_try=2`. A diff takes two, prefixed `from_` and `to_`
(`?from_end_of_try=1&to_end_of_try=2`). A state, diff or timeline whose answer needs an event
compaction removed is a 410 with reason `history_compacted` naming the earliest position still
answerable (the events route lists what the log holds, compaction markers included, and never
is); a point that never happened (a try that never wrote) is a 404 with reason `no_such_point`.
With an archive configured, every route answers from log + archive.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final

import msgspec
from starlette.responses import Response

from eventstore.log.events import EVENT_KINDS, RecordedEvent
from eventstore.log.values import check_key
from eventstore.service.auth import sees_sensitive
from eventstore.service.errors import HTTPProblem
from eventstore.service.operation import (
    MAX_LIST_LIMIT,
    Call,
    Operation,
    Param,
    ScopeKind,
    unknown_scope,
)
from eventstore.service.params import SCOPE_KINDS, prefix_of, scope_params, suffix_of
from eventstore.service.parsing import query_time
from eventstore.service.responses import json_response
from projections import At, History, TrySummary

__all__ = ["HISTORY_OPERATIONS", "DiffAnswer", "EventPage", "StateAnswer", "Timeline", "Tries"]


class EventPage(msgspec.Struct, kw_only=True):
    """A page of events, oldest first; pass `next_after_seq` as `after_seq` for the next page.

    A value written sensitive is null (the event says sensitive: true) for everyone but the task
    instance's own token and admins; an erased value is null with erased: true.
    """

    events: list[RecordedEvent]
    next_after_seq: int | None


class StateAnswer(msgspec.Struct, kw_only=True):
    """The scope's {key: value} as of a point, expired keys left out.

    "<masked>" stands for a sensitive value the bearer may not see, "<erased>" for a value erased
    with its scope.
    """

    at: str
    state: dict[str, Any]


class DiffAnswer(msgspec.Struct, kw_only=True, rename={"from_": "from"}):
    """What changed between two points: keys added, removed, and changed as [old, new].

    Compared on the real values; then "<masked>" stands for a sensitive value the bearer may not
    see, "<erased>" for a value erased with its scope.
    """

    from_: str
    to: str
    added: dict[str, Any]
    removed: dict[str, Any]
    # [old, new]. Typed as a list of two rather than a tuple: the tuple's schema (prefixItems
    # with items: false) trips schemathesis' response validation.
    changed: dict[str, Annotated[list[Any], msgspec.Meta(min_length=2, max_length=2)]]


class Timeline(msgspec.Struct, kw_only=True):
    """A page of one key's sets and deletes, oldest first; `next_after_seq` asks for the next
    page (null: this was the last)."""

    key: str
    events: list[RecordedEvent]
    next_after_seq: int | None


class Tries(msgspec.Struct, kw_only=True):
    """One summary per try that wrote to the scope, in try order."""

    tries: list[TrySummary]


POINTS: Final = ("seq", "version", "at", "end_of_try", "start_of_try")


def _point(call: Call, prefix: str = "") -> At:
    query = call.request.query_params
    given = [name for name in POINTS if prefix + name in query]
    if len(given) != 1:
        names = ", ".join(prefix + name for name in POINTS)
        raise HTTPProblem(422, "bad_query", f"name exactly one point of {names}; got {given}")
    name = given[0]
    if name == "at":
        return At.time(_time(call, prefix + name))
    number = call.query_int(prefix + name, None, 0, 2**62)
    assert number is not None
    match name:
        case "seq":
            return At.seq(number)
        case "version":
            return At.version(number)
        case "end_of_try":
            return At.end_of_try(number)
    return At.start_of_try(number)


def _time(call: Call, name: str) -> datetime:
    return query_time(name, call.request.query_params[name])


def _mask(call: Call) -> bool:
    return not sees_sensitive(call.claims, call.the_scope())


async def _history(call: Call) -> History:
    scope = call.the_scope()
    if await call.store.scope_id(scope) is None:
        raise unknown_scope(scope)
    return call.store.history(scope)


def _paged(events: list[RecordedEvent], limit: int) -> tuple[list[RecordedEvent], int | None]:
    """A page of `limit` events read as `limit + 1`, and where the next page starts (None: no
    more)."""
    page = events[:limit]
    return page, page[-1].seq if len(events) > limit else None


async def list_events(call: Call) -> Response:
    query = call.request.query_params
    limit = call.query_int("limit", 100, 1, MAX_LIST_LIMIT)
    assert limit is not None
    kinds = None
    if "kinds" in query:
        kinds = [k for k in query["kinds"].split(",") if k]
        unknown = sorted(set(kinds) - set(EVENT_KINDS))
        if unknown or not kinds:
            raise HTTPProblem(
                422, "bad_query", f"kinds takes some of {', '.join(EVENT_KINDS)}; got {unknown}"
            )
    history = await _history(call)
    events = await history.events(
        key=check_key(query["key"]) if "key" in query else None,
        kinds=kinds,
        try_number=call.query_int("try", None, 0, 2**62),
        since=_time(call, "since") if "since" in query else None,
        until=_time(call, "until") if "until" in query else None,
        after_seq=call.query_int("after_seq", None, 0, 2**62),
        limit=limit + 1,
        mask=_mask(call),
    )
    page, next_after_seq = _paged(events, limit)
    return json_response(EventPage(events=page, next_after_seq=next_after_seq))


async def state_at(call: Call) -> Response:
    at = _point(call)
    history = await _history(call)
    state = await history.state(at, mask=_mask(call))
    return json_response(StateAnswer(at=str(at), state=state))


async def diff_points(call: Call) -> Response:
    a, b = _point(call, "from_"), _point(call, "to_")
    history = await _history(call)
    diff = await history.diff(a, b, mask=_mask(call))
    answer = DiffAnswer(
        from_=str(a),
        to=str(b),
        added=diff.added,
        removed=diff.removed,
        changed={k: list(pair) for k, pair in diff.changed.items()},
    )
    return json_response(answer)


async def timeline(call: Call) -> Response:
    key = check_key(call.request.path_params["key"])
    after = call.query_int("after_seq", None, 0, 2**62)
    limit = call.query_int("limit", 100, 1, MAX_LIST_LIMIT)
    assert limit is not None
    history = await _history(call)
    events = await history.timeline(key, after_seq=after, limit=limit + 1, mask=_mask(call))
    page, next_after_seq = _paged(events, limit)
    return json_response(Timeline(key=key, events=page, next_after_seq=next_after_seq))


async def tries(call: Call) -> Response:
    history = await _history(call)
    return json_response(Tries(tries=await history.tries()))


_SEQ: Final[dict[str, Any]] = {"type": "integer", "minimum": 0, "maximum": 2**62}
_TIME: Final[dict[str, Any]] = {"type": "string", "format": "date-time"}
_LIMIT: Final = Param(
    "limit",
    "query",
    {"type": "integer", "minimum": 1, "maximum": MAX_LIST_LIMIT},
    "most events on a page (default 100)",
)
_POINT_DOCS: Final[dict[str, tuple[dict[str, Any], str]]] = {
    "seq": (_SEQ, "as of this global position"),
    "version": (_SEQ, "as of this version of the scope (0: before its first event)"),
    "at": (_TIME, "as of this time, expiry applied as of it"),
    "end_of_try": (_SEQ, "as try N left it"),
    "start_of_try": (_SEQ, "as try N saw it before its first write"),
}


def _point_params(prefix: str, lead: str) -> tuple[Param, ...]:
    return tuple(
        Param(prefix + name, "query", schema, f"{lead}{doc}; give exactly one point")
        for name, (schema, doc) in _POINT_DOCS.items()
    )


_STATUSES: Final = (401, 403, 404, 410, 422)
_KINDS: Final = "|".join(EVENT_KINDS)


def _operations(kind: ScopeKind) -> list[Operation]:
    prefix = prefix_of(kind)
    scope = scope_params(kind)
    suffix = suffix_of(kind)
    tag = "history"

    def op(
        path: str,
        name: str,
        summary: str,
        handler: Any,
        response: type,
        params: tuple[Param, ...],
        statuses: tuple[int, ...] = _STATUSES,
    ) -> Operation:
        return Operation(
            "GET",
            prefix + path,
            f"{name}_{suffix}",
            summary,
            handler,
            tag,
            action="history",
            scope=kind,
            response=response,
            params=(*scope, *params),
            statuses=statuses,
        )

    seq_param = Param("after_seq", "query", _SEQ, "only events after this position")
    return [
        op(
            "/history",
            "history",
            "The scope's events, oldest first, filtered and paginated: what the log holds "
            "(with an archive, log + archive), compaction markers included",
            list_events,
            EventPage,
            (
                Param("key", "query", {"type": "string", "minLength": 1}, "only this key"),
                Param(
                    "kinds",
                    "query",
                    {
                        "type": "string",
                        "pattern": f"^({_KINDS})(,({_KINDS}))*$",
                    },
                    f"comma-separated kinds: {', '.join(EVENT_KINDS)}",
                ),
                Param("try", "query", _SEQ, "only events of this try"),
                Param("since", "query", _TIME, "recorded at or after this time"),
                Param("until", "query", _TIME, "recorded at or before this time"),
                seq_param,
                _LIMIT,
            ),
            (401, 403, 404, 422),
        ),
        op(
            "/state",
            "state",
            "The scope's state as of one point",
            state_at,
            StateAnswer,
            _point_params("", ""),
        ),
        op(
            "/diff",
            "diff",
            "What changed between two points",
            diff_points,
            DiffAnswer,
            (*_point_params("from_", "from: "), *_point_params("to_", "to: ")),
        ),
        op(
            "/timeline/{key:path}",
            "timeline",
            "Every set and delete of one key, oldest first",
            timeline,
            Timeline,
            (
                Param(
                    "key",
                    "path",
                    {"type": "string", "minLength": 1, "maxLength": 512},
                    "the key; a / in it is sent as %2F",
                    True,
                ),
                seq_param,
                _LIMIT,
            ),
        ),
        op("/tries", "tries", "One summary per try that wrote to the scope", tries, Tries, ()),
    ]


HISTORY_OPERATIONS: Final[list[Operation]] = [
    operation for kind in SCOPE_KINDS for operation in _operations(kind)
]
