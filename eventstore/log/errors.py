"""The errors tasktrail raises, in one small tree.

    EventStoreError
    ├── InvalidKeyError            (also ValueError / TypeError via subclasses below)
    │   ├── KeyTypeError           (TypeError)   the key is not a str
    │   └── KeyValueError          (ValueError)  empty, longer than 512 characters, or not Unicode
    ├── InvalidValueError
    │   ├── ValueTypeError         (TypeError)   not a JSON value: datetime, set, bytes, tuple, …
    │   ├── NoneValueError         (ValueError)  a top-level None
    │   ├── NonFiniteValueError    (ValueError)  NaN or Infinity somewhere in the value
    │   ├── UnicodeValueError      (ValueError)  a str with a lone surrogate (not UTF-8)
    │   ├── ValueTooLargeError     (ValueError)  encoded value over max_value_bytes
    │   └── ValueTooDeepError      (ValueError)  lists and dicts nested past MAX_VALUE_DEPTH
    ├── RetentionTypeError         (TypeError)   retention is not a timedelta / NEVER_EXPIRE / None
    ├── RetentionValueError        (ValueError)  a zero or negative timedelta
    ├── ExpiryValueError           (ValueError)  expires_at outside the UTC calendar
    ├── ConfigError                (ValueError)  a StoreConfig or URL that cannot work
    ├── ConcurrencyError                         expected version is stale
    ├── StaleAttemptError                        a lower try writes after a newer try wrote
    ├── HistoryCompactedError                    the question needs events compaction removed
    ├── CompactionRunningError                   another process or replica is compacting
    ├── ArchiveError                             an archive file is missing or damaged
    ├── NoSuchPointError           (LookupError) a history point that never happened
    ├── SchemaVersionError                       the database was written by a newer tasktrail
    ├── MasterKeyError             (ConfigError) master keys missing, wrong, or not all given
    ├── DecryptionError                          a sealed value or data key does not open
    ├── StoreClosedError                         the store was closed
    └── StorageError                             the database failed: disk full, I/O, unreachable
        └── ReadOnlyStoreError                   a write to a store that is or must be read-only

Messages are built from the data and say what to do; the data stays on attributes.
"""

from __future__ import annotations

__all__ = [
    "ArchiveError",
    "CompactionRunningError",
    "ConcurrencyError",
    "ConfigError",
    "DecryptionError",
    "EventStoreError",
    "ExpiryValueError",
    "HistoryCompactedError",
    "InvalidKeyError",
    "InvalidValueError",
    "KeyTypeError",
    "KeyValueError",
    "MasterKeyError",
    "NoSuchPointError",
    "NonFiniteValueError",
    "NoneValueError",
    "ReadOnlyStoreError",
    "RetentionTypeError",
    "RetentionValueError",
    "SchemaVersionError",
    "StaleAttemptError",
    "StorageError",
    "StoreClosedError",
    "UnicodeValueError",
    "ValueTooDeepError",
    "ValueTooLargeError",
    "ValueTypeError",
]


class EventStoreError(Exception):
    """Base class of every error tasktrail raises on purpose."""


class InvalidKeyError(EventStoreError):
    """A key that the store does not accept."""


class KeyTypeError(InvalidKeyError, TypeError):
    def __init__(self, key: object) -> None:
        self.key = key
        super().__init__(
            f"key must be a str, got {type(key).__name__} {key!r}; convert it with str() first"
        )


class KeyValueError(InvalidKeyError, ValueError):
    def __init__(self, key: str, max_length: int) -> None:
        self.key = key
        self.max_length = max_length
        if key and len(key) <= max_length:
            message = (
                f"key {key[:40]!r} is not valid Unicode text: it holds a lone surrogate, "
                "which UTF-8 cannot store; decode bytes with errors='replace' first"
            )
        elif not key:
            message = "key must not be empty; name the checkpoint, e.g. 'offset'"
        else:
            message = (
                f"key is {len(key)} characters long, the limit is {max_length}: "
                f"{key[:40]!r}…; use a shorter key and keep long data in the value"
            )
        super().__init__(message)


class InvalidValueError(EventStoreError):
    """A value that cannot be stored as JSON; the message names its key, then the problem."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        super().__init__(f"value for key {key!r} {problem}")


class ValueTypeError(InvalidValueError, TypeError):
    def __init__(self, key: str, detail: str) -> None:
        self.detail = detail
        super().__init__(
            key,
            f"is not JSON: {detail}; store str, int, float, bool, "
            "list or dict with str keys (convert datetimes with .isoformat(), sets to lists)",
        )


class NoneValueError(InvalidValueError, ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key, f"cannot be None; to remove the key call delete({key!r})")


class NonFiniteValueError(InvalidValueError, ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(
            key,
            "contains NaN or Infinity, which JSON cannot represent; "
            "store None inside a container, a string, or a finite number instead",
        )


class UnicodeValueError(InvalidValueError, ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(
            key,
            "holds a str that is not valid Unicode text (a lone "
            "surrogate), which JSON cannot carry; decode bytes with errors='replace' first",
        )


class ValueTooLargeError(InvalidValueError, ValueError):
    def __init__(self, key: str, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(
            key,
            f"is {size} bytes as JSON, over the limit of {limit}; "
            "keep large data elsewhere and store a reference, or raise "
            "StoreConfig(max_value_bytes=...)",
        )


class ValueTooDeepError(InvalidValueError, ValueError):
    def __init__(self, key: str, limit: int) -> None:
        self.limit = limit
        super().__init__(
            key,
            f"nests lists and dicts more than {limit} levels deep; "
            "flatten it (e.g. store the deep part as a JSON string or under its own keys)",
        )


class ExpiryValueError(EventStoreError, ValueError):
    def __init__(self, expires_at: object) -> None:
        self.expires_at = expires_at
        super().__init__(
            f"expires_at {expires_at!s} is outside the UTC calendar (years 1 to 9999 in UTC); "
            "pass a time within it, or retention=NEVER_EXPIRE for a value that never expires"
        )


class RetentionTypeError(EventStoreError, TypeError):
    def __init__(self, retention: object) -> None:
        self.retention = retention
        super().__init__(
            f"retention takes a timedelta, NEVER_EXPIRE or None, got "
            f"{type(retention).__name__} {retention!r}; e.g. retention=timedelta(days=7)"
        )


class RetentionValueError(EventStoreError, ValueError):
    def __init__(self, retention: object, longest: object = None) -> None:
        self.retention = retention
        if longest is None:
            message = f"retention must be a positive timedelta, got {retention!r}"
        else:
            message = f"retention {retention!r} is longer than the longest allowed, {longest!r}"
        super().__init__(f"{message}; use NEVER_EXPIRE for values that must never expire")


class ConfigError(EventStoreError, ValueError):
    """A configuration or URL that cannot work; the message names the setting."""


class ConcurrencyError(EventStoreError):
    def __init__(self, scope: object, expected_version: int, actual_version: int) -> None:
        self.scope = scope
        self.expected_version = expected_version
        self.actual_version = actual_version
        super().__init__(
            f"{scope} is at version {actual_version}, the write expected {expected_version}; "
            "another writer got there first: read the scope again and retry"
        )


class StaleAttemptError(EventStoreError):
    def __init__(self, scope: object, try_number: int, latest_try: int) -> None:
        self.scope = scope
        self.try_number = try_number
        self.latest_try = latest_try
        super().__init__(
            f"try {try_number} of {scope} cannot write: try {latest_try} has already written; "
            "this is a stale attempt (a zombie worker) and its write was not recorded"
        )


class HistoryCompactedError(EventStoreError):
    def __init__(self, scope: object, question: str, earliest: int, fix: str = "") -> None:
        self.scope = scope
        self.question = question
        self.earliest_seq = earliest
        super().__init__(
            f"cannot answer {question} for {scope}: compaction removed the events it needs; "
            f"the earliest point still answerable is At.seq({earliest})"
            + (f"; {fix}" if fix else "")
        )


class CompactionRunningError(EventStoreError):
    """Another process or replica holds the database's compaction lock: one compactor at a
    time. Nothing was changed; compact again later (a schedule just waits for its next tick)."""

    def __init__(self, where: str) -> None:
        self.where = where
        super().__init__(
            f"another compaction of {where} is running (another process or replica holds its "
            "compaction lock); nothing was changed, try again when it has finished"
        )


class ArchiveError(EventStoreError):
    """An archive file a manifest names is missing, or does not match its checksum."""


class NoSuchPointError(EventStoreError, LookupError):
    """A point of history that does not exist in the scope: a try that never wrote, a version
    the scope has not reached."""

    def __init__(self, scope: object, point: str, detail: str) -> None:
        self.scope = scope
        self.point = point
        self.detail = detail
        super().__init__(f"{point} does not exist in {scope}: {detail}")


class SchemaVersionError(EventStoreError):
    def __init__(self, found: int, supported: int, where: str) -> None:
        self.found = found
        self.supported = supported
        super().__init__(
            f"{where} has schema version {found}, this tasktrail supports up to {supported}; "
            "upgrade tasktrail to open it"
        )


class StoreClosedError(EventStoreError):
    def __init__(self, what: str = "store") -> None:
        super().__init__(f"the {what} is closed; open a new one with open_store(...)")


class MasterKeyError(ConfigError):
    """The master keys given cannot open this store's key store: missing, wrong, or retired."""


class DecryptionError(EventStoreError):
    """A sealed value or a wrapped data key does not open: altered, moved, or its key lost.

    Never a wrong value: a ciphertext is bound to its scope, key and version.
    """


class StorageError(EventStoreError):
    """The database failed under the store: its disk is full, it cannot be opened or reached,
    an I/O error. Raised in place of the driver's error (on `__cause__`), one translation per
    backend; the message names the database, the cause and the fix. `cause` is a short word:
    "full", "read_only", "io", "locked", "unreachable", "damaged" or "other"."""

    def __init__(self, message: str, *, where: str = "", cause: str = "other") -> None:
        self.where = where
        self.cause = cause
        super().__init__(message)


class ReadOnlyStoreError(StorageError):
    """A write to a store opened read-only (`StoreConfig(read_only=True)`, `--read-only`), or
    opening for writing a database that cannot be written (a read-only file, folder or mount).
    Nothing was written."""

    def __init__(self, where: str, detail: str, fix: str) -> None:
        self.detail = detail
        super().__init__(f"{where} {detail}; {fix}", where=where, cause="read_only")
