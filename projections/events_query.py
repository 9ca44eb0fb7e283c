"""`events()`, the filtered list of a scope's events, as every history offers it: the filters
are checked here, once, for the library's `History` and the client's `RemoteHistory`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from datetime import datetime
from typing import NamedTuple

import msgspec

from eventstore.log.backends.rows import EventFilter
from eventstore.log.events import EVENT_KINDS, RecordedEvent, to_micros

__all__ = ["EventQuery", "EventsReader", "check_limit"]


class EventQuery(NamedTuple):
    """The filters of one `events()` call, checked: `kinds` a set of known kinds, `since` and
    `until` aware, `limit` an int >= 0 (None: no filter)."""

    key: str | None
    kinds: frozenset[str] | None
    try_number: int | None
    since: datetime | None
    until: datetime | None
    after_seq: int | None
    limit: int | None

    def where(self) -> EventFilter:
        """The log's filter for it, its times in microseconds."""
        since, until = (None if t is None else to_micros(t) for t in (self.since, self.until))
        return EventFilter(**{**self._asdict(), "since": since, "until": until})


class EventsReader(ABC):
    """The `events()` of a scope's history; a history answers the checked query in `_events`."""

    async def events(
        self,
        key: str | None = None,
        kinds: Iterable[str] | None = None,
        try_number: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after_seq: int | None = None,
        limit: int | None = None,
        *,
        mask: bool = False,
    ) -> list[RecordedEvent]:
        """The scope's events, oldest first, filtered; page with `after_seq` and `limit`.

        mask: a value written with sensitive=True reads as None (the event says sensitive=True),
        for faces showing history to readers who may not see it.
        """
        kind_set = None
        if kinds is not None:
            kind_set = frozenset([kinds] if isinstance(kinds, str) else kinds)
            unknown = sorted(kind_set - set(EVENT_KINDS))
            if unknown:
                raise ValueError(f"unknown event kinds {unknown}; use some of {list(EVENT_KINDS)}")
        check_limit(limit)
        for name, moment in (("since", since), ("until", until)):
            if moment is not None and (not isinstance(moment, datetime) or moment.tzinfo is None):
                raise TypeError(f"{name} must be an aware datetime (e.g. in UTC), got {moment!r}")
        query = EventQuery(key, kind_set, try_number, since, until, after_seq, limit)
        events = await self._events(query)
        if mask:
            events = [msgspec.structs.replace(e, value=None) if e.sensitive else e for e in events]
        return events

    @abstractmethod
    async def _events(self, query: EventQuery) -> list[RecordedEvent]: ...


def check_limit(limit: int | None) -> None:
    if limit is not None and (type(limit) is not int or limit < 0):
        raise ValueError(f"limit must be an int >= 0 or None, got {limit!r}")
