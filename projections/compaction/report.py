"""What a compaction reports."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

__all__ = ["CompactionReport"]


class CompactionReport(msgspec.Struct, frozen=True, kw_only=True):
    """What a compaction removed (or, on a dry run, would remove) and what it gave back."""

    dry_run: bool
    keys_expired: Annotated[
        int, msgspec.Meta(description="keys whose every event went because their expiry passed")
    ]
    events_removed: int
    expired_events: Annotated[int, msgspec.Meta(description="... of which: events of expired keys")]
    superseded_events: Annotated[
        int, msgspec.Meta(description="... superseded history older than the horizon")
    ]
    tombstones: Annotated[
        int, msgspec.Meta(description="... deletes and clears with nothing left to hide")
    ]
    scopes_touched: int
    markers_appended: int
    bytes_before: int
    bytes_after: Annotated[int | None, msgspec.Meta(description="null on a dry run")]
    duration_seconds: float
    horizon: Annotated[
        datetime | None,
        msgspec.Meta(description="history superseded before this went; null: all was kept"),
    ]
    idempotency_ids_forgotten: Annotated[
        int,
        msgspec.Meta(
            description="results of idempotency ids older than idempotency_days, forgotten"
        ),
    ] = 0
    archive_file: Annotated[
        str | None,
        msgspec.Meta(
            description="the archive file holding every event removed; null: no archive "
            "configured, nothing removed, or a dry run"
        ),
    ] = None
    archive_bytes: Annotated[int, msgspec.Meta(description="the archive file's size")] = 0
