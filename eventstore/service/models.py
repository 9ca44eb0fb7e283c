"""The JSON bodies of the HTTP API, as msgspec Structs; the OpenAPI schemas come from these.

Request bodies forbid unknown fields, so a typo (`"retentoin"`) is a 422 rather than a silent
default. Response bodies do not, so clients keep working when a field is added.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import UNSET, UnsetType

__all__ = [
    "MAX_BATCH_KEYS",
    "MAX_RETENTION_SECONDS",
    "AssetBatchBody",
    "AssetPutBody",
    "BatchBody",
    "Health",
    "KeyEntry",
    "KeyList",
    "PatchBody",
    "PutBody",
    "Retention",
    "RewindAnswer",
    "TaskPutBody",
    "WriteResult",
]

# Up to 100 years; below a microsecond a retention would round to nothing.
MAX_RETENTION_SECONDS: Final = 100 * 365.25 * 86_400

Retention = (
    Literal["default", "never"]
    | Annotated[
        float,
        msgspec.Meta(
            ge=1e-6,
            le=MAX_RETENTION_SECONDS,
            description="seconds the value is kept: at least a microsecond, at most 100 years",
        ),
    ]
)
Value = Annotated[
    Any,
    msgspec.Meta(
        description="any JSON value except null (null inside a list or object is fine)",
        extra_json_schema={"not": {"type": "null"}},
    ),
]
Key = Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
# The most keys one batch may set (413 beyond): a batch is planned and committed as one
# transaction, and this keeps the one that holds the others up short.
MAX_BATCH_KEYS: Final = 10_000
BatchValues = Annotated[
    dict[Key, Value],
    msgspec.Meta(
        max_length=MAX_BATCH_KEYS, description=f"key -> value, at most {MAX_BATCH_KEYS} keys"
    ),
]
_RETENTION_DOC = (
    '"default" (the store\'s default_retention_days), "never" (kept until deleted or cleared), '
    "or a number of seconds from 1e-6 to 3155760000 (100 years)"
)


_SENSITIVE_DOC = (
    "true marks the key sensitive: its values are masked for everyone but the task instance's "
    "own token and admins; false clears the flag (an event history shows); left out, the key "
    "keeps the flag it has"
)
Sensitive = Annotated[bool, msgspec.Meta(description=_SENSITIVE_DOC)] | UnsetType


_ExpiresAt = Annotated[
    datetime,
    msgspec.Meta(
        tz=True,
        description="when the value expires (RFC 3339 with an offset), kept exactly; "
        "instead of retention (a body with both is refused)",
    ),
]


class PutBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Set one key of a task instance."""

    value: Value
    retention: Annotated[Retention, msgspec.Meta(description=_RETENTION_DOC)] | UnsetType = UNSET
    expires_at: _ExpiresAt | UnsetType = UNSET
    sensitive: Sensitive = UNSET


# The bodies as the routes take them: retention or expires_at, not both (neither: "default").
_ONE_EXPIRY: Final = msgspec.Meta(
    extra_json_schema={"not": {"required": ["retention", "expires_at"]}}
)
TaskPutBody: Final = Annotated[PutBody, _ONE_EXPIRY]


class AssetPutBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Set one key of an asset; asset entries never expire."""

    value: Value
    sensitive: Sensitive = UNSET


class PatchBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Change a key's value and keep its expiry."""

    value: Value
    sensitive: Sensitive = UNSET


class BatchBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Set several keys of a task instance in one atomic step."""

    values: BatchValues
    retention: Annotated[Retention, msgspec.Meta(description=_RETENTION_DOC)] | UnsetType = UNSET
    expires_at: _ExpiresAt | UnsetType = UNSET
    sensitive: Sensitive = UNSET


TaskBatchBody: Final = Annotated[BatchBody, _ONE_EXPIRY]


class AssetBatchBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Set several keys of an asset in one atomic step."""

    values: BatchValues
    sensitive: Sensitive = UNSET


class KeyEntry(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One live key: its value, when it was last set and when it expires (null: never).

    A value written sensitive reads as null (with sensitive: true) for everyone but the task
    instance's own token and admins.
    """

    key: str
    value: Any
    updated_at: datetime
    expires_at: datetime | None
    sensitive: bool = False


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


class RewindAnswer(msgspec.Struct, kw_only=True):
    """What the rewind did, or would do with dry_run: keys set and deleted, and the diff from
    the current values to the values after it (changed as [old, new]). `rewound_to` is the
    position the point resolved to; every event the rewind appended carries it."""

    point: str
    rewound_to: int
    dry_run: bool
    version: int
    seq: int | None
    set: list[str]
    deleted: list[str]
    added: dict[str, Any]
    removed: dict[str, Any]
    changed: dict[str, tuple[Any, Any]]
