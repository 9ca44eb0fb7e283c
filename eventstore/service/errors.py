"""The one table from errors to HTTP statuses, and the JSON body every error answers with.

Every error body is `{"reason": ..., "message": ..., "detail": {...}}`: `reason` is a stable
machine word, `message` says what went wrong and what to do, `detail` carries the error's data
(versions, tries, sizes) so the client can raise the same exception class the store raises.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

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

__all__ = ["ERRORS", "SERVICE_REASONS", "ErrorBody", "HTTPProblem", "problem_of"]


class ErrorBody(msgspec.Struct, kw_only=True, omit_defaults=True):
    reason: str
    message: str
    detail: dict[str, Any] | None = None


class HTTPProblem(Exception):
    """An error the service itself answers with: auth, unknown scope or key, a bad request."""

    def __init__(
        self, status: int, reason: str, message: str, detail: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.detail = detail


# exception class -> (status, reason, attributes copied into "detail"). The most specific class
# along the exception's MRO wins. The client reads this table backwards.
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


# The reasons the service answers with itself, beside the store's errors above (for the docs).
SERVICE_REASONS: Final[dict[str, tuple[int, str]]] = {
    "repeated_header": (400, "Authorization, If-Match, Idempotency-Key or Tasktrail-Try twice"),
    "unauthenticated": (401, "no bearer token, or not a Bearer Authorization header"),
    "bad_token": (401, "the token is malformed, badly signed or expired"),
    "forbidden": (403, "the token's role or task instance does not allow this"),
    "try_mismatch": (403, "the Tasktrail-Try header names another try than the task token"),
    "unknown_scope": (404, "nothing was ever written to the scope the path names"),
    "unknown_key": (404, "the scope has no live key by that name (absent or expired)"),
    "no_such_point": (404, "a history point that never happened (a try that never wrote)"),
    "not_found": (404, "no such route"),
    "method_not_allowed": (405, "the route does not take this method; see the Allow header"),
    "body_too_large": (413, "the request body is over the service's limit (16 MiB)"),
    "bad_body": (422, "the body is not JSON, not the documented shape, or has unknown fields"),
    "duplicate_field": (422, "an object of the body names a field twice (a batch a key twice)"),
    "value_too_deep": (422, "a value nests lists and objects past the limit (100 levels)"),
    "too_many_keys": (413, "a batch sets more keys than the limit (10,000)"),
    "bad_query": (422, "a query parameter is malformed or out of range"),
    "bad_header": (422, "If-Match or Idempotency-Key is malformed"),
    "bad_scope": (422, "the path or ?uri= does not name a valid scope"),
    "unhealthy": (503, "/healthz: the store does not answer"),
    "busy": (503, "a PATCH lost the race to concurrent writers every time it retried"),
    "internal_error": (500, "a bug; the service's log has the traceback"),
}


def problem_of(error: BaseException) -> HTTPProblem | None:
    """The HTTP answer to an error the store raised, or None if the table does not know it."""
    if isinstance(error, HTTPProblem):
        return error
    for kind in type(error).__mro__:
        entry = ERRORS.get(kind)
        if entry is not None:
            status, reason, fields = entry
            detail = {f: _plain(getattr(error, f, None)) for f in fields} or None
            return HTTPProblem(status, reason, str(error), detail)
    return None


def _plain(value: object) -> object:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)
