"""POST /api/v1/compact: an admin runs a compaction (or a dry run) and gets its report.

One compactor at a time on a database: while another process or replica compacts, the answer
is 409 `compaction_running` and nothing changes. The service's own schedule (`tasktrail serve
--compact-every`) runs beside this route; see docs/how-to/run-the-service.md.
"""

from __future__ import annotations

from typing import Final

from starlette.responses import Response

from eventstore.service.operation import Call, Operation, Param
from eventstore.service.responses import json_response
from projections.compaction import CompactionReport

__all__ = ["COMPACTION_OPERATIONS"]


async def compact(call: Call) -> Response:
    dry_run = call.query_bool("dry_run")
    metrics = call.state.metrics
    try:
        report = await call.store.compact(dry_run=dry_run)
    except Exception as error:
        if not dry_run:
            metrics.compaction_error(error)
        raise
    metrics.compacted(report, call.state.wall())
    return json_response(report)


COMPACTION_OPERATIONS: Final = [
    Operation(
        "POST",
        "/api/v1/compact",
        "compact",
        "Remove expired keys and superseded history beyond the horizon from the log (admin)",
        compact,
        "maintenance",
        action="compact",
        response=CompactionReport,
        params=(
            Param(
                "dry_run",
                "query",
                {"type": "boolean"},
                "plan and report what would go, change nothing (default false)",
            ),
        ),
        statuses=(401, 403, 409, 422),
    )
]
