"""Per-try summaries of a scope's writes."""

from __future__ import annotations

from datetime import datetime

import msgspec

from eventstore.log.backends.rows import EventRow
from eventstore.log.events import from_micros

__all__ = ["TryCounter", "TrySummary"]


class TrySummary(msgspec.Struct, frozen=True, kw_only=True):
    """One try's writes to a scope."""

    try_number: int
    first_seq: int
    last_seq: int
    first_write_at: datetime
    last_write_at: datetime
    writes: int
    keys: list[str]  # keys set or deleted, sorted


class TryCounter:
    __slots__ = ("first", "keys", "last", "writes")

    def __init__(self, row: EventRow) -> None:
        self.first = row
        self.last = row
        self.writes = 0
        self.keys: set[str] = set()

    def add(self, row: EventRow) -> None:
        self.last = row
        self.writes += 1
        if row.key is not None:
            self.keys.add(row.key)

    def summary(self, try_number: int) -> TrySummary:
        return TrySummary(
            try_number=try_number,
            first_seq=self.first.seq,
            last_seq=self.last.seq,
            first_write_at=from_micros(self.first.recorded_at),
            last_write_at=from_micros(self.last.recorded_at),
            writes=self.writes,
            keys=sorted(self.keys),
        )
