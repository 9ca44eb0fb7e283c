"""POST .../store:rewind: make a scope's current values what they were at a past point (admins).

The body names one point, as the history routes do: `{"end_of_try": 1}`, `{"seq": 41}`,
`{"version": 7}`, `{"at": "2026-01-01T00:00:00Z"}` or `{"start_of_try": 2}`; with
`"dry_run": true` the answer is the diff the rewind would apply, and nothing is written.
`If-Match` makes it conditional on the scope's version (409 otherwise); `Tasktrail-Try` stamps
(and fences) its events with a try, as for any admin write. See `projections.rewind`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Final

import msgspec
from starlette.responses import Response

from eventstore.service.errors import HTTPProblem
from eventstore.service.models import RewindAnswer
from eventstore.service.operation import Call, Operation, ScopeKind, unknown_scope
from eventstore.service.params import (
    IF_MATCH,
    SCOPE_KINDS,
    TRY,
    prefix_of,
    scope_params,
    suffix_of,
)
from eventstore.service.parsing import in_utc_calendar
from eventstore.service.responses import json_response
from projections import At

__all__ = ["REWIND_OPERATIONS", "RewindAnswer", "RewindBody"]

Count = Annotated[int, msgspec.Meta(ge=0, le=2**62)]


class RewindBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The point to rewind to (exactly one of seq, version, at, end_of_try, start_of_try)."""

    seq: Count | None = None
    version: Count | None = None
    at: datetime | None = None
    end_of_try: Count | None = None
    start_of_try: Count | None = None
    dry_run: bool = False


def _point(body: RewindBody) -> At:
    given = [
        name
        for name in ("seq", "version", "at", "end_of_try", "start_of_try")
        if getattr(body, name) is not None
    ]
    if len(given) != 1:
        raise HTTPProblem(
            422,
            "bad_body",
            f"name exactly one point of seq, version, at, end_of_try, start_of_try; got {given}",
        )
    match given[0]:
        case "seq":
            return At.seq(body.seq)  # type: ignore[arg-type]
        case "version":
            return At.version(body.version)  # type: ignore[arg-type]
        case "end_of_try":
            return At.end_of_try(body.end_of_try)  # type: ignore[arg-type]
        case "start_of_try":
            return At.start_of_try(body.start_of_try)  # type: ignore[arg-type]
    assert body.at is not None
    if body.at.tzinfo is None:
        raise HTTPProblem(422, "bad_body", "at must name its time zone, e.g. a final Z")
    return At.time(in_utc_calendar("at", body.at, "bad_body"))


async def rewind_scope(call: Call) -> Response:
    body: RewindBody = await call.body(RewindBody)
    at = _point(body)
    scope = call.the_scope()
    if await call.store.scope_id(scope) is None:
        raise unknown_scope(scope)
    claims = call.claims
    assert claims is not None
    result = await call.store.history(scope).rewind(
        at,
        try_number=call.try_number(),
        actor=claims.actor,
        expected_version=call.expected_version(),
        dry_run=body.dry_run,
    )
    answer = RewindAnswer(
        point=result.point,
        rewound_to=result.rewound_to,
        dry_run=result.dry_run,
        version=result.version,
        seq=result.seq,
        set=result.set,
        deleted=result.deleted,
        added=result.diff.added,
        removed=result.diff.removed,
        changed=result.diff.changed,
    )
    return json_response(answer, headers={"ETag": f'"{result.version}"'})


def _operation(kind: ScopeKind) -> Operation:
    what = "task instance" if kind == "task" else "asset"
    return Operation(
        "POST",
        f"{prefix_of(kind)}/store:rewind",
        f"rewind_{suffix_of(kind)}",
        f"Rewind the {what} to a past point (admins): append the sets and deletes that make its "
        "current values the state there; dry_run answers the diff and writes nothing",
        rewind_scope,
        "task store" if kind == "task" else "asset store",
        action="rewind",
        scope=kind,
        body=RewindBody,
        response=RewindAnswer,
        params=(*scope_params(kind), IF_MATCH, TRY),
        statuses=(401, 403, 404, 409, 410, 422),
    )


REWIND_OPERATIONS: Final[list[Operation]] = [_operation(kind) for kind in SCOPE_KINDS]
