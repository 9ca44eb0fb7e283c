"""The stored forms of a value, and what a value reads as when it cannot be shown.

How a value is stored, in the projection's `value` column and in a `set` event:

- plain: the value's JSON, as before encryption existed (the first byte of JSON is never 0x01
  or 0x02). In the event, `KeySet.value`.
- flagged: 0x02, a flags byte, then the JSON: a plain value with flags (sensitive) in the
  projection. In the event, `KeySet.value` and `KeySet.sensitive`.
- sealed: 0x01, a flags byte, the data key's generation (4 bytes), a 12-byte nonce, then the
  AES-GCM ciphertext of the JSON. In the event, `KeySet.sealed` (and `KeySet.value` is null).
  The associated data (`value_aad`) binds it to the scope, the key and the version it was
  written at, and to its own header, so a ciphertext moved to another row fails to open.

A `set` event whose `value` is null and `sealed` is absent had its value scrubbed by an erasure.
Sealing and opening are the vault's (`eventstore.log.vault`).
"""

from __future__ import annotations

import struct
from typing import Final, Self

from eventstore.log.events import KeySet

__all__ = [
    "ERASED",
    "FLAGGED",
    "HEADER",
    "MASKED",
    "NONCE",
    "NULL_JSON",
    "SEALED",
    "SENSITIVE",
    "Erased",
    "Masked",
    "enc_hook",
    "is_sensitive",
    "plain_json",
    "stored_value",
    "value_aad",
    "wrap_aad",
]

SEALED: Final = 0x01
FLAGGED: Final = 0x02
SENSITIVE: Final = 0x01

HEADER: Final = struct.Struct(">BBI")  # kind, flags, data key generation
NONCE: Final = 12
NULL_JSON: Final = b"null"


class _Placeholder:
    """A value that stands for one the reader cannot have: one instance per class, named by
    `_name` (its repr, and the module-level name it pickles as)."""

    _name = ""
    _instance: _Placeholder | None = None

    def __new__(cls) -> Self:
        if not isinstance(cls._instance, cls):
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return self._name

    def __reduce__(self) -> str:
        return self._name


class Erased(_Placeholder):
    """The type of ERASED: what an erased value reads as in a state of history."""

    _name = "ERASED"

    def __bool__(self) -> bool:
        return False


ERASED: Final = Erased()


class Masked(_Placeholder):
    """The type of MASKED: a sensitive value in a state or diff shown to a reader who may not see
    it (History.state(at, mask=True)); faces render it as "<masked>"."""

    _name = "MASKED"


MASKED: Final = Masked()


def enc_hook(value: object) -> object:
    """A msgspec `enc_hook` for faces that print states and diffs: ERASED and MASKED as text."""
    if value is ERASED:
        return "<erased>"  # a value erased with its scope
    if value is MASKED:
        return "<masked>"  # a sensitive value the reader may not see
    raise NotImplementedError(f"cannot encode {type(value).__name__}")


def stored_value(event: KeySet) -> bytes:
    """The projection bytes a set event stands for (what the fold and the write path store)."""
    if event.sealed is not None:
        return event.sealed
    if event.sensitive:
        return bytes((FLAGGED, SENSITIVE)) + bytes(event.value)
    return bytes(event.value)


def plain_json(stored: bytes) -> bytes | None:
    """The JSON of a plain or flagged stored value, None for a sealed (or empty) one: what a
    read opens without the vault, and without the version a sealed value is bound to."""
    if not stored:
        return None
    kind = stored[0]
    if kind == FLAGGED:
        return stored[2:]
    return None if kind == SEALED else stored


def is_sensitive(stored: bytes) -> bool:
    """Whether a stored projection value was written with sensitive=True."""
    return bool(stored) and stored[0] in (SEALED, FLAGGED) and bool(stored[1] & SENSITIVE)


def value_aad(scope_key: str, key: str, version: int, header: bytes) -> bytes:
    scope = scope_key.encode()
    name = key.encode()
    return b"".join(
        (
            b"tasktrail/value/1",
            len(scope).to_bytes(4, "big"),
            scope,
            len(name).to_bytes(4, "big"),
            name,
            version.to_bytes(8, "big"),
            header,
        )
    )


def wrap_aad(scope_key: str, generation: int, master_id: str) -> bytes:
    scope = scope_key.encode()
    return b"".join(
        (
            b"tasktrail/data-key/1",
            len(scope).to_bytes(4, "big"),
            scope,
            generation.to_bytes(4, "big"),
            master_id.encode(),
        )
    )
