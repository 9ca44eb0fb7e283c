"""The one table from errors to HTTP statuses, and the JSON body every error answers with.

Every error body is `{"reason": ..., "message": ..., "detail": {...}}`: `reason` is a stable
machine word, `message` says what went wrong and what to do, `detail` carries the error's data
(versions, tries, sizes) so the client can raise the same exception class the store raises.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from eventstore.errors import (
    ConcurrencyError,
    ConfigError,
    EventStoreError,
    HistoryCompactedError,
    KeyTypeError,
    KeyValueError,
    NoneValueError,
    NonFiniteValueError,
    NoSuchPointError,
    RetentionTypeError,
    RetentionValueError,
    StaleAttemptError,
    StoreClosedError,
    ValueTooLargeError,
    ValueTypeError,
)

__all__ = ["ERRORS", "ErrorBody", "HTTPProblem", "problem_of"]


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
    RetentionTypeError: (422, "bad_retention", ()),
    RetentionValueError: (422, "bad_retention", ()),
    ConcurrencyError: (409, "version_conflict", ("expected_version", "actual_version")),
    StaleAttemptError: (410, "stale_attempt", ("try_number", "latest_try")),
    HistoryCompactedError: (410, "history_compacted", ("question", "earliest_seq")),
    NoSuchPointError: (404, "no_such_point", ("point", "detail")),
    StoreClosedError: (503, "store_closed", ()),
    ConfigError: (500, "config_error", ()),
    EventStoreError: (500, "store_error", ()),
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
