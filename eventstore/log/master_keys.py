"""Master keys: the form `<id>.<urlsafe base64 of 32 bytes>`, made by `tasktrail keygen`, read
from `StoreConfig.master_keys` or `TASKTRAIL_MASTER_KEYS`. Config checks them here, below the vault
that uses them (`eventstore.log.vault`)."""

from __future__ import annotations

import base64
import os
import re
import secrets
from collections.abc import Iterable
from typing import Final

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from eventstore.log.errors import ConfigError

MASTER_KEYS_ENV: Final = "TASKTRAIL_MASTER_KEYS"

_KEY_ID: Final = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


class MasterKey:
    """A master key: an id (named in each data key it wraps) and 32 secret bytes."""

    __slots__ = ("aead", "key_id")

    def __init__(self, key_id: str, secret: bytes) -> None:
        self.key_id = key_id
        self.aead = AESGCM(secret)

    def __repr__(self) -> str:
        return f"<MasterKey {self.key_id}>"


def generate_master_key() -> str:
    """A new master key in the form `<id>.<urlsafe base64 of 32 random bytes>`."""
    secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    return f"k{secrets.token_hex(4)}.{secret}"


def parse_master_keys(keys: Iterable[str]) -> list[MasterKey]:
    """Parse master keys; the error names the key's position and id, never its secret."""
    parsed: list[MasterKey] = []
    for index, text in enumerate(keys):
        key_id, dot, encoded = text.strip().partition(".")
        if not dot or not _KEY_ID.match(key_id):
            raise ConfigError(
                f"master key {index + 1} is not of the form <id>.<base64 secret>; "
                "make one with `tasktrail keygen`"
            )
        try:
            secret = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        except ValueError:
            secret = b""
        if len(secret) != 32:
            raise ConfigError(
                f"master key {index + 1} ({key_id}) must hold 32 bytes of urlsafe base64; "
                "make one with `tasktrail keygen`"
            )
        if any(k.key_id == key_id for k in parsed):
            raise ConfigError(f"master key id {key_id} is given twice")
        parsed.append(MasterKey(key_id, secret))
    return parsed


def master_keys_from_env() -> tuple[str, ...]:
    text = os.environ.get(MASTER_KEYS_ENV, "")
    return tuple(part for part in (p.strip() for p in text.split(",")) if part)
