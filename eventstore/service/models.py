"""The JSON bodies of the HTTP API, as msgspec Structs; the OpenAPI schemas come from these.

Request bodies forbid unknown fields, so a typo (`"retentoin"`) is a 422 rather than a silent
default. Response bodies do not, so clients keep working when a field is added.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

__all__ = [
    "AssetBatchBody",
    "AssetPutBody",
    "BatchBody",
    "Health",
    "KeyEntry",
    "KeyList",
    "PatchBody",
    "PutBody",
    "Retention",
    "WriteResult",
]

Retention = (
    Literal["default", "never"]
    | Annotated[
        float,
        msgspec.Meta(
            gt=0,
            description="seconds the value is kept, > 0 and at most 100 years",
        ),
    ]
)
_RETENTION_DOC = (
    '"default" (the store\'s default_retention_days), "never" (kept until deleted or cleared), '
    "or a number of seconds > 0"
)


class PutBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Set one key of a task instance."""

    value: Annotated[Any, msgspec.Meta(description="any JSON value except null")]
    retention: Annotated[Retention, msgspec.Meta(description=_RETENTION_DOC)] = "default"


class AssetPutBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Set one key of an asset; asset entries never expire."""

    value: Annotated[Any, msgspec.Meta(description="any JSON value except null")]


class PatchBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Change a key's value and keep its expiry."""

    value: Annotated[Any, msgspec.Meta(description="any JSON value except null")]


class BatchBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Set several keys of a task instance in one atomic step."""

    values: dict[str, Any]
    retention: Annotated[Retention, msgspec.Meta(description=_RETENTION_DOC)] = "default"


class AssetBatchBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Set several keys of an asset in one atomic step."""

    values: dict[str, Any]


class KeyEntry(msgspec.Struct, kw_only=True):
    """One live key: its value, when it was last set and when it expires (null: never)."""

    key: str
    value: Any
    updated_at: datetime
    expires_at: datetime | None


class KeyList(msgspec.Struct, kw_only=True):
    """A page of live keys ordered by key; pass `next` as `after` for the next page."""

    items: list[KeyEntry]
    next: str | None
    version: Annotated[int, msgspec.Meta(description="the scope's version when read")]


class WriteResult(msgspec.Struct, kw_only=True):
    """What a write did: the scope's version after it and the position of its last event."""

    version: int
    seq: Annotated[int | None, msgspec.Meta(description="null when nothing changed")]
    events: int
    recorded_at: datetime


class Health(msgspec.Struct, kw_only=True):
    status: Literal["ok"]
    version: str
