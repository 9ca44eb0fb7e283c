"""Points in a scope's history: `At.seq`, `At.version`, `At.time`, `At.end_of_try`,
`At.start_of_try`.

A point is inclusive: a state as of a position, a version or a time includes the event recorded at
exactly that point. History resolves a point, per scope, to a position: the scope's last event at
or before the point (see `projections.history.History.resolve`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

import msgspec

__all__ = ["At", "PointKind"]

PointKind = Literal["seq", "version", "time", "end_of_try", "start_of_try"]


class At(msgspec.Struct, frozen=True):
    """A point in history. Make one with the constructors, e.g. `At.end_of_try(1)`."""

    kind: PointKind
    number: int = 0  # the position, version or try number
    moment: datetime | None = None  # for At.time

    @staticmethod
    def seq(position: int) -> At:
        """After the event at global position `position` (and everything before it)."""
        return At("seq", _count("position", position))

    @staticmethod
    def version(version: int) -> At:
        """After the scope's event with this version; version 0 is before its first event."""
        return At("version", _count("version", version))

    @staticmethod
    def time(moment: datetime) -> At:
        """After every event recorded at or before `moment`, with expiry applied as of `moment`."""
        if not isinstance(moment, datetime) or moment.tzinfo is None:
            raise TypeError(f"At.time takes an aware datetime (e.g. in UTC), got {moment!r}")
        try:
            moment.astimezone(UTC)
        except OverflowError:
            raise ValueError(
                f"At.time takes a moment within the UTC calendar (years 1 to 9999 in UTC), "
                f"got {moment.isoformat()}"
            ) from None
        return At("time", moment=moment)

    @staticmethod
    def end_of_try(try_number: int) -> At:
        """After the last write of try `try_number`: what the try left behind."""
        return At("end_of_try", _count("try_number", try_number))

    @staticmethod
    def start_of_try(try_number: int) -> At:
        """Just before the first write of try `try_number`: what the try saw when it started."""
        return At("start_of_try", _count("try_number", try_number))

    def __str__(self) -> str:
        if self.kind == "time":
            assert self.moment is not None
            return f"At.time({self.moment.isoformat()})"
        return f"At.{self.kind}({self.number})"


def _count(name: str, value: object) -> int:
    if type(value) is not int or value < 0:
        raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    return value
