"""GET /api/v1/scopes: the scopes most recently written first, for auditors and admins.

Filters by kind, dag, run, task and time of the last write; paginated with an opaque cursor
(`next`, passed back as `after`). The web page's start page lists scopes with it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final, Literal

import msgspec
from starlette.responses import Response

from eventstore.log.events import from_micros, to_micros
from eventstore.log.scopes import Scope, scope_from_key
from eventstore.service.errors import HTTPProblem
from eventstore.service.operation import Call, Operation, Param
from eventstore.service.parsing import query_time
from eventstore.service.responses import json_response
from eventstore.store import ScopeFilter, ScopeRow

__all__ = ["SCOPE_OPERATIONS", "ScopeEntry", "ScopePage"]

MAX_SCOPES_LIMIT: Final = 500


class ScopeEntry(msgspec.Struct, kw_only=True):
    """One scope and its head: how many events it has had, its newest try, its last write."""

    scope: Scope
    kind: Literal["task", "asset"]
    version: Annotated[int, msgspec.Meta(description="events ever appended to the scope")]
    max_try: int | None
    updated_at: datetime


class ScopePage(msgspec.Struct, kw_only=True):
    """Scopes, most recently written first; pass `next` as `after` for the next page."""

    items: list[ScopeEntry]
    next: str | None


def _entry(row: ScopeRow) -> ScopeEntry:
    return ScopeEntry(
        scope=scope_from_key(row.scope_key),
        kind="task" if row.dag_id is not None else "asset",
        version=row.version,
        max_try=row.max_try,
        updated_at=from_micros(row.updated_at),
    )


def _time(call: Call, name: str) -> int | None:
    text = call.request.query_params.get(name)
    return None if text is None else to_micros(query_time(name, text, assume_utc=True))


def _cursor(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    at, _, scope_id = text.partition(".")
    # Both numbers fit the databases' 64-bit integers (a microsecond time, a scope id).
    if not all(p.isascii() and p.isdigit() and len(p) <= 18 for p in (at, scope_id)):
        raise HTTPProblem(422, "bad_query", f"after must be the `next` of a page, got {text!r}")
    return int(at), int(scope_id)


async def list_scopes(call: Call) -> Response:
    query = call.request.query_params
    kind = query.get("kind")
    if kind not in (None, "task", "asset"):
        raise HTTPProblem(422, "bad_query", f"kind must be task or asset, got {kind!r}")
    limit = call.query_int("limit", 50, 1, MAX_SCOPES_LIMIT)
    assert limit is not None
    names: dict[str, Any] = {}
    for name, param in _FILTERS.items():
        if param in query:
            if not query[param]:
                raise HTTPProblem(422, "bad_query", f"{param} must not be empty; leave it out")
            names[name] = query[param]
    if names and kind is None:
        kind = "task"  # assets have no dag, run or task: asking for one lists task instances
    where = ScopeFilter(
        kind=kind,
        since=_time(call, "since"),
        until=_time(call, "until"),
        before=_cursor(query.get("after")),
        limit=limit + 1,
        **names,
    )
    rows = await call.store.recent_scopes(where)
    page = rows[:limit]
    more = len(rows) > limit
    next_cursor = f"{page[-1].updated_at}.{page[-1].scope_id}" if more else None
    return json_response(ScopePage(items=[_entry(r) for r in page], next=next_cursor))


_FILTERS: Final = {"dag_id": "dag", "run_id": "run", "task_id": "task"}

SCOPE_OPERATIONS: Final = [
    Operation(
        "GET",
        "/api/v1/scopes",
        "list_scopes",
        "Scopes most recently written first, filtered by kind, dag, run, task and time",
        list_scopes,
        "history",
        action="history",
        response=ScopePage,
        params=(
            Param("kind", "query", {"enum": ["task", "asset"]}, "only task instances or assets"),
            Param(
                "dag",
                "query",
                {"type": "string", "minLength": 1},
                "only task instances of this DAG",
            ),
            Param(
                "run",
                "query",
                {"type": "string", "minLength": 1},
                "only task instances of this run",
            ),
            Param(
                "task",
                "query",
                {"type": "string", "minLength": 1},
                "only task instances of this task",
            ),
            Param(
                "since",
                "query",
                {"type": "string", "format": "date-time"},
                "only scopes last written at or after this time",
            ),
            Param(
                "until",
                "query",
                {"type": "string", "format": "date-time"},
                "only scopes last written at or before this time",
            ),
            Param(
                "limit",
                "query",
                {"type": "integer", "minimum": 1, "maximum": MAX_SCOPES_LIMIT},
                "most scopes on a page (default 50)",
            ),
            Param(
                "after",
                "query",
                {"type": "string", "pattern": "^[0-9]{1,18}[.][0-9]{1,18}$"},
                "the `next` of the previous page",
            ),
        ),
        statuses=(401, 403, 422),
    )
]
