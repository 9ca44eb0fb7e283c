"""What a write asks of the log (`AppendRequest` and its ops) and what it did (`AppendResult`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

import msgspec

from eventstore.log.config import NeverExpire
from eventstore.log.events import AnyEvent
from eventstore.log.scopes import Scope

__all__ = [
    "AppendRequest",
    "AppendResult",
    "ClearOp",
    "DeleteOp",
    "EraseOp",
    "MarkOp",
    "Op",
    "SetOp",
    "decode_result",
    "encode_result",
]


class SetOp(msgspec.Struct, frozen=True):
    key: str
    value: bytes  # already checked and encoded JSON
    retention: timedelta | NeverExpire | None = None
    expires_at: datetime | None = None  # an absolute expiry wins over retention
    # True or False marks or clears the key's sensitive flag; None keeps the flag the key has
    # (a write that does not say never unmasks a secret).
    sensitive: bool | None = None
    rewound_to: int | None = None  # a rewind's set: the position it restores (KeySet.rewound_to)


class DeleteOp(msgspec.Struct, frozen=True):
    key: str
    rewound_to: int | None = None  # a rewind's delete (KeyDeleted.rewound_to)


class ClearOp(msgspec.Struct, frozen=True):
    all_map_indices: bool = False


class MarkOp(msgspec.Struct, frozen=True):
    """A system marker (e.g. `Compacted`), made once its position is known so it can name it."""

    make: Callable[[int], AnyEvent]


class EraseOp(msgspec.Struct, frozen=True):
    """Clear the scope and mark it erased; its data keys are destroyed before the batch."""


Op = SetOp | DeleteOp | ClearOp | MarkOp | EraseOp


class AppendRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One caller's write: its ops are appended together or not at all."""

    scope: Scope
    ops: Sequence[Op]
    try_number: int | None = None
    actor: str = "task"
    expected_version: int | None = None
    idempotency_id: str | None = None


class AppendResult(msgspec.Struct, frozen=True, kw_only=True):
    """What an append did: the scope's version after it and the position of its last event."""

    version: int
    seq: int | None  # None when the write changed nothing (a delete of an absent key)
    events: int
    recorded_at: datetime


# The stored form of a result, kept for idempotent retries.
encode_result = msgspec.json.Encoder().encode
decode_result = msgspec.json.Decoder(AppendResult).decode
