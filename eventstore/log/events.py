"""The events of the log: one tagged msgspec union, and the recorded form readers get back.

Stored events are never rewritten. A new need gets a new field with a default, or a new kind;
a field never changes its type.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final, Literal

import msgspec

from eventstore.log.scopes import Scope

__all__ = [
    "Compacted",
    "Event",
    "EventKind",
    "KeyDeleted",
    "KeySet",
    "RecordedEvent",
    "ScopeCleared",
    "ScopeErased",
    "Shown",
    "TryHorizon",
    "decode_event",
    "encode_event",
    "from_micros",
    "to_micros",
]

EventKind = Literal["set", "delete", "clear", "compacted", "erased"]
EVENT_KINDS: Final = ("set", "delete", "clear", "compacted", "erased")


class Event(msgspec.Struct, frozen=True, tag_field="kind"):
    """Base of every event kind."""


class KeySet(Event, frozen=True, tag="set"):
    key: str
    # The value's JSON, encoded once by the store and kept byte for byte; null when the value is
    # sealed (then in `sealed`) or was scrubbed by an erasure. See eventstore.log.envelope.
    value: msgspec.Raw
    expires_at: datetime | None = None
    sealed: bytes | None = None  # the encrypted value, with its header (eventstore.log.envelope)
    sensitive: bool = False  # set(..., sensitive=True): faces mask the value
    # Written by a rewind (projections.rewind): the global position the scope was rewound to
    # (0: before its first event). None for every other write.
    rewound_to: int | None = None
    # True on a write that said sensitive=False to a key that was sensitive: the flag was
    # cleared here. Left out of the stored JSON otherwise (UNSET is never encoded).
    sensitive_cleared: bool | msgspec.UnsetType = msgspec.UNSET


class KeyDeleted(Event, frozen=True, tag="delete"):
    key: str
    rewound_to: int | None = None  # as on KeySet: the position a rewind went back to


class ScopeCleared(Event, frozen=True, tag="clear"):
    # True when this clear is one of the clears of a whole task's map indices, made at once.
    all_map_indices: bool = False


class Shown(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A stretch of positions where a value compaction removed was its key's latest event, so
    a state there would show it: from the `set` at `from_seq` (recorded `from_at`) until the
    event that superseded it at `until_seq` (recorded `until_at`; 0 and None: none did, the
    value expired). `expired_at` is when the value stopped showing by expiry; None: it showed
    throughout. Stretches of several keys that behave alike are one.
    """

    from_seq: int
    from_at: datetime
    until_seq: int = 0
    until_at: datetime | None = None
    expired_at: datetime | None = None


class TryHorizon(msgspec.Struct, frozen=True, kw_only=True):
    """What one compaction removed of one try's writes: its last removed write (`last_seq`,
    recorded `last_at`) and, when the try's first write went, that one (`first_seq`, `first_at`),
    so where the try started and ended can still be found."""

    try_number: int
    last_seq: int
    last_at: datetime
    first_seq: int = 0
    first_at: datetime | None = None


class Compacted(Event, frozen=True, tag="compacted"):
    """Written by compaction into each scope it removed something from."""

    reason: str
    events_removed: int = 0
    keys_expired: list[str] = msgspec.field(default_factory=list)
    removed_through_seq: int = 0  # history at or before this position may be gone
    horizon: datetime | None = None
    # Every state of the scope at or after this position is still exact; 0: say nothing more
    # than removed_through_seq. The contract history holds compaction to is in
    # projections.history.
    answerable_from_seq: int = 0
    # reason, events_removed and keys_expired describe this compaction; removed_through_seq,
    # answerable_from_seq and the fields below hold for the scope's whole compacted past, so the
    # scope's latest marker alone describes what is gone.
    removed_from_seq: int = 0  # the lowest position removed; states before it are exact
    # Tries whose first write in this scope was removed: their start can no longer be found.
    first_writes_removed: list[int] = msgspec.field(default_factory=list)
    # Per key (tasktrail >= 0.2): what this compaction removed, key by key, where the removed
    # values would show in a state, the scope's clears and the tries whose writes went. A
    # marker with `per_key` False (written before) says only "every state before
    # answerable_from_seq, of every key, may be gone".
    per_key: bool = False
    keys: dict[str, int] = msgspec.field(default_factory=dict)  # key: its highest removed seq
    shown: list[Shown] = msgspec.field(default_factory=list)  # where removed values showed
    clears_through_seq: int = 0  # the highest position of a removed clear (0: none went)
    tries: list[TryHorizon] = msgspec.field(default_factory=list)
    # The archive file holding every event this compaction removed (None: not archived).
    archive: str | None = None


class ScopeErased(Event, frozen=True, tag="erased"):
    """Written by `Store.erase` after a clear: every value of the scope before it is erased.

    Its data keys were destroyed (values sealed with them never open again, in any copy of the
    log), and plain values left from before encryption were scrubbed from the stored events.
    """

    data_keys_through: int = 0  # the scope's data key generations destroyed (0: none)


AnyEvent = KeySet | KeyDeleted | ScopeCleared | Compacted | ScopeErased

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(AnyEvent)


def encode_event(event: AnyEvent) -> bytes:
    return _encoder.encode(event)


def decode_event(payload: bytes) -> AnyEvent:
    event: AnyEvent = _decoder.decode(payload)
    return event


class RecordedEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An event as the log recorded it, with its position and who wrote it."""

    seq: int
    version: int
    kind: EventKind
    scope: Scope
    key: str | None = None
    value: Any = None
    expires_at: datetime | None = None
    recorded_at: datetime
    try_number: int | None = None
    actor: str = "task"
    detail: dict[str, Any] | None = None  # the marker's fields, for system events
    sensitive: bool = False  # written with sensitive=True: faces mask the value
    # This write said sensitive=False to a key that was sensitive, and so cleared its flag.
    sensitive_cleared: bool = False
    erased: bool = False  # the scope was erased: `value` is None, the metadata is kept
    rewound_to: int | None = None  # written by a rewind to this position (projections.rewind)


def to_micros(moment: datetime) -> int:
    """A UTC instant as integer microseconds since the epoch, the form indexes compare."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    global _last_moment
    # The events of one commit share their recorded time: readers of the log in position order
    # (the live feed, rebuild) convert the same instant many times in a row.
    last = _last_moment
    if last[0] == micros:
        return last[1]
    moment = datetime.fromtimestamp(micros // 1_000_000, UTC).replace(
        microsecond=micros % 1_000_000
    )
    _last_moment = (micros, moment)
    return moment


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_last_moment: tuple[int, datetime] = (0, _EPOCH)
