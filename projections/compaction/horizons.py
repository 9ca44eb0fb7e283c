"""What a compaction removed from one scope, as its marker says it: each key's highest removed
position, the stretches where removed values showed, and the tries whose writes went.

See `projections.history` for how history reads these fields.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, NamedTuple

from eventstore.log.backends.rows import EventRow
from eventstore.log.events import Compacted, Shown, TryHorizon, decode_event, from_micros

__all__ = ["MAX_SHOWN", "answerable_from", "key_horizons", "last_marker", "try_horizons"]

MAX_SHOWN: Final = 32


class _Span(NamedTuple):
    """A stretch of `Shown`, with its times in microseconds: made and merged for every removed
    set, turned into `Shown` only for the few the marker keeps."""

    from_seq: int
    from_at: int
    until_seq: int  # 0: until it expired
    until_at: int | None
    expired_at: int | None

    def shown(self) -> Shown:
        return Shown(
            from_seq=self.from_seq,
            from_at=from_micros(self.from_at),
            until_seq=self.until_seq,
            until_at=None if self.until_at is None else from_micros(self.until_at),
            expired_at=None if self.expired_at is None else from_micros(self.expired_at),
        )


def key_horizons(
    rows: Sequence[EventRow], removed: Sequence[int], superseded_by: Sequence[int | None]
) -> tuple[dict[str, int], list[Shown]]:
    """Each key's highest removed position, and the stretches where a removed `set` was its
    key's latest event (from the set until its key's next event or the next clear), with
    their expiry: per key first, then those of all keys that behave alike as one."""
    through: dict[str, int] = {}
    per_key: dict[str, list[_Span]] = {}
    for i in removed:
        row = rows[i]
        if row.key is None:
            continue
        through[row.key] = row.seq
        if row.kind != "set":
            continue
        end = superseded_by[i]
        until_at = None if end is None else rows[end].recorded_at
        # A state within the stretch has its expiry applied as of a time no later than the
        # superseding event's: a value expiring after that showed throughout.
        expired_at = row.expires_at
        if expired_at is not None and until_at is not None and expired_at > until_at:
            expired_at = None
        until_seq = 0 if end is None else rows[end].seq
        spans = per_key.setdefault(row.key, [])
        last = spans[-1] if spans else None
        if (
            last is not None
            and last.until_seq == row.seq
            and last.expired_at is None
            and (expired_at is None or expired_at > row.recorded_at)
        ):
            # The key's earlier stretch showed throughout, and this one starts where it ended
            # and shows at least until a time after that: one stretch.
            spans[-1] = _Span(last.from_seq, last.from_at, until_seq, until_at, expired_at)
        else:
            spans.append(_Span(row.seq, row.recorded_at, until_seq, until_at, expired_at))
    # Across keys: overlapping stretches with the same expiry show exactly where their union
    # does (a state in it shows one of the values, under the same condition).
    merged: list[_Span] = []
    for span in sorted((s for spans in per_key.values() for s in spans), key=_from):
        last = merged[-1] if merged else None
        if (
            last is not None
            and last.expired_at == span.expired_at
            and (last.until_seq == 0 or span.from_seq <= last.until_seq)
        ):
            if last.until_seq != 0 and (span.until_seq == 0 or span.until_seq > last.until_seq):
                merged[-1] = _Span(
                    last.from_seq, last.from_at, span.until_seq, span.until_at, last.expired_at
                )
        else:
            merged.append(span)
    if len(merged) > MAX_SHOWN:
        merged = [*_merged(merged[: -MAX_SHOWN + 2]), *merged[-MAX_SHOWN + 2 :]]
    return {key: through[key] for key in sorted(through)}, [span.shown() for span in merged]


def _from(span: _Span) -> int:
    return span.from_seq


def _merged(spans: Sequence[_Span]) -> list[_Span]:
    """At most two stretches covering these, showing wherever any of them did (never less):
    one for those some event superseded, one for those that expired (never "forever")."""
    out = []
    bounded = [s for s in spans if s.until_seq]
    if bounded:
        last = max(bounded, key=lambda s: s.until_seq)
        expiries = [s.expired_at for s in bounded]
        expired_at = None if None in expiries else max(e for e in expiries if e is not None)
        first = bounded[0]
        out.append(_Span(first.from_seq, first.from_at, last.until_seq, last.until_at, expired_at))
    unbounded = [s for s in spans if not s.until_seq]
    if unbounded:
        expired_at = max(s.expired_at for s in unbounded if s.expired_at is not None)
        out.append(_Span(unbounded[0].from_seq, unbounded[0].from_at, 0, None, expired_at))
    return out


def try_horizons(
    rows: Sequence[EventRow], removed: Sequence[int], first_of_try: dict[int, int]
) -> list[TryHorizon]:
    gone = set(removed)
    last: dict[int, int] = {}
    for i in removed:
        number = rows[i].try_number
        if number is not None and rows[i].kind != "compacted":
            last[number] = i
    horizons = []
    for number in sorted(last):
        first = first_of_try[number]
        first_gone = first in gone
        horizons.append(
            TryHorizon(
                try_number=number,
                last_seq=rows[last[number]].seq,
                last_at=from_micros(rows[last[number]].recorded_at),
                first_seq=rows[first].seq if first_gone else 0,
                first_at=from_micros(rows[first].recorded_at) if first_gone else None,
            )
        )
    return horizons


def last_marker(rows: Sequence[EventRow]) -> Compacted | None:
    for row in reversed(rows):
        if row.kind == "compacted":
            event = decode_event(row.payload)
            assert isinstance(event, Compacted)
            return event
    return None


def answerable_from(marker: Compacted) -> int:
    if marker.answerable_from_seq:
        return marker.answerable_from_seq
    return marker.removed_through_seq + 1 if marker.removed_through_seq else 0
