"""The error reasons of the HTTP API, shared by the service and its client.

The service answers a store error with the status and `reason` of its class here, and copies
the listed attributes into the body's `detail`; the client reads the table backwards
(`error_class`) to raise the same class, with the same message and attributes, as the embedded
store would. A face module below both: it knows the log's errors and nothing of HTTP's
machinery, so the client needs no part of the server to read an answer.
"""

from __future__ import annotations

from typing import Final

from eventstore.log.errors import (
    CompactionRunningError,
    ConcurrencyError,
    ConfigError,
    DecryptionError,
    EventStoreError,
    ExpiryValueError,
    HistoryCompactedError,
    KeyTypeError,
    KeyValueError,
    NoneValueError,
    NonFiniteValueError,
    NoSuchPointError,
    ReadOnlyStoreError,
    RetentionTypeError,
    RetentionValueError,
    StaleAttemptError,
    StorageError,
    StoreClosedError,
    ValueTooDeepError,
    ValueTooLargeError,
    ValueTypeError,
)

__all__ = ["ERRORS", "error_class"]


# exception class -> (status, reason, attributes copied into "detail"). The most specific class
# along the exception's MRO wins.
ERRORS: Final[dict[type[BaseException], tuple[int, str, tuple[str, ...]]]] = {
    KeyTypeError: (422, "bad_key", ()),
    KeyValueError: (422, "bad_key", ("max_length",)),
    NoneValueError: (422, "null_value", ("key",)),
    NonFiniteValueError: (422, "non_finite_value", ("key",)),
    ValueTypeError: (422, "bad_value", ("key", "detail")),
    ValueTooLargeError: (413, "value_too_large", ("key", "size", "limit")),
    ValueTooDeepError: (422, "value_too_deep", ("key", "limit")),
    ExpiryValueError: (422, "bad_expiry", ()),
    RetentionTypeError: (422, "bad_retention", ()),
    RetentionValueError: (422, "bad_retention", ()),
    ConcurrencyError: (409, "version_conflict", ("expected_version", "actual_version")),
    StaleAttemptError: (410, "stale_attempt", ("try_number", "latest_try")),
    HistoryCompactedError: (410, "history_compacted", ("question", "earliest_seq")),
    NoSuchPointError: (404, "no_such_point", ("point", "detail")),
    CompactionRunningError: (409, "compaction_running", ()),
    StoreClosedError: (503, "store_closed", ()),
    # `serve --read-only`, or a database that cannot be written: reads go on, writes wait.
    ReadOnlyStoreError: (503, "read_only", ("cause",)),
    # The database failed under the store (a full disk, an I/O error): nothing was written.
    StorageError: (503, "storage_error", ("cause",)),
    ConfigError: (500, "config_error", ()),
    DecryptionError: (500, "undecryptable_value", ()),
    EventStoreError: (500, "store_error", ()),
}


# The table read backwards: reason -> the most specific class with it.
_CLASSES: Final[dict[str, type[BaseException]]] = {}
for _kind, (_status, _reason, _fields) in ERRORS.items():
    _CLASSES.setdefault(_reason, _kind)


def error_class(reason: str) -> type[BaseException] | None:
    """The store's exception class a `reason` stands for; None for the service's own reasons."""
    return _CLASSES.get(reason)
