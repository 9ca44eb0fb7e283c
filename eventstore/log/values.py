"""The rules for keys and values, and their one encoding to JSON bytes."""

from __future__ import annotations

import math
from typing import Any, Final

import msgspec

from eventstore.log.errors import (
    KeyTypeError,
    KeyValueError,
    NoneValueError,
    NonFiniteValueError,
    UnicodeValueError,
    ValueTooDeepError,
    ValueTooLargeError,
    ValueTypeError,
)

__all__ = [
    "MAX_KEY_LENGTH",
    "MAX_VALUE_DEPTH",
    "check_key",
    "check_label",
    "decode_value",
    "encode_value",
    "is_unicode",
]

MAX_KEY_LENGTH: Final = 512
# Lists and dicts nest at most this deep in a value (`[[1]]` is 2 deep); deeper ones are refused
# (ValueTooDeepError), so no reader of the value, here or in a client, runs out of stack.
MAX_VALUE_DEPTH: Final = 100

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


def check_key(key: object) -> str:
    if not isinstance(key, str):
        raise KeyTypeError(key)
    # isascii reads a flag the str keeps: most keys need no trial encoding.
    if not key or len(key) > MAX_KEY_LENGTH or not (key.isascii() or is_unicode(key)):
        raise KeyValueError(key, MAX_KEY_LENGTH)
    return key


def is_unicode(text: str) -> bool:
    """False for a str holding a lone surrogate, which no database or JSON encoder accepts."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_label(name: str, value: object) -> str:
    """Check a short text stored beside events (actor, idempotency id) before it is queued."""
    if not isinstance(value, str) or not value:
        error = TypeError if not isinstance(value, str) else ValueError
        raise error(f"{name} must be a non-empty str, got {type(value).__name__} {value!r}")
    if not is_unicode(value):
        raise ValueError(f"{name} {value[:40]!r} is not valid Unicode text (a lone surrogate)")
    return value


def encode_value(key: str, value: object, max_bytes: int) -> bytes:
    """Check that value is plain JSON and return its encoding; raise naming the problem."""
    if value is None:
        raise NoneValueError(key)
    if type(value) not in _PLAIN:
        _check_json(key, value, 0)
    try:
        encoded = _encode(value)
    except UnicodeEncodeError:
        raise UnicodeValueError(key) from None
    if max_bytes and len(encoded) > max_bytes:
        raise ValueTooLargeError(key, len(encoded), max_bytes)
    return encoded


def decode_value(encoded: bytes) -> Any:
    return _decode(encoded)


# Items of exactly these types (None too) are plain JSON: checked where they stand, with no
# call each. Their subclasses and floats (which may not be finite) take the call.
_PLAIN: Final = frozenset((str, int, bool, type(None)))


def _check_json(key: str, value: object, depth: int) -> None:
    # bool is an int, str and int cover their enum subclasses; everything else is named.
    if isinstance(value, str | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise NonFiniteValueError(key)
        return
    if isinstance(value, list):
        depth += 1
        if depth > MAX_VALUE_DEPTH:
            raise ValueTooDeepError(key, MAX_VALUE_DEPTH)
        for item in value:
            if type(item) not in _PLAIN:
                _check_json(key, item, depth)
        return
    if isinstance(value, dict):
        depth += 1
        if depth > MAX_VALUE_DEPTH:
            raise ValueTooDeepError(key, MAX_VALUE_DEPTH)
        for name, item in value.items():
            if type(name) is not str and not isinstance(name, str):
                raise ValueTypeError(
                    key, f"a dict key {name!r} is a {type(name).__name__}, not a str"
                )
            if type(item) not in _PLAIN:
                _check_json(key, item, depth)
        return
    raise ValueTypeError(key, f"{type(value).__name__} {_short_repr(value)}")


def _short_repr(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
