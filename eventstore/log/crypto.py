"""Encryption at rest: envelope encryption of stored values, with one data key per scope.

The master keys come from `StoreConfig.master_keys` (or `TASKTRAIL_MASTER_KEYS`): the first one
wraps new data keys, every one of them unwraps. Each scope has its own random 256-bit data key,
kept wrapped (AES-GCM under a master key) in a key store that lives apart from the log: for a
SQLite file `PATH`, the SQLite file `PATH.keys`; `StoreConfig.key_store` names another place.
Destroying a scope's data keys (`Store.erase`) makes every value of the scope unreadable, in the
live database and in every backup of the log (crypto-shredding).

How a value is stored, in the projection's `value` column and in a `set` event:

- plain: the value's JSON, as before encryption existed (the first byte of JSON is never 0x01
  or 0x02). In the event, `KeySet.value`.
- flagged: 0x02, a flags byte, then the JSON: a plain value with flags (sensitive) in the
  projection. In the event, `KeySet.value` and `KeySet.sensitive`.
- sealed: 0x01, a flags byte, the data key's generation (4 bytes), a 12-byte nonce, then the
  AES-GCM ciphertext of the JSON. In the event, `KeySet.sealed` (and `KeySet.value` is null).
  The associated data binds it to the scope, the key and the version it was written at, and to
  its own header, so a ciphertext moved to another row fails to open.

A `set` event whose `value` is null and `sealed` is absent had its value scrubbed by an erasure.
`Vault` is the one seam every reader and the write path go through.
"""

from __future__ import annotations

import re
import secrets
import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

import anyio.to_thread
import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from eventstore.log.backends import open_key_store
from eventstore.log.backends.base import EventFilter, EventRow, LogBackend
from eventstore.log.errors import ConfigError, DecryptionError, MasterKeyError
from eventstore.log.events import KeySet, decode_event, encode_event
from eventstore.log.keystore import KeyStore
from eventstore.log.master_keys import MASTER_KEYS_ENV, MasterKey, parse_master_keys
from eventstore.log.values import decode_value

__all__ = [
    "ERASED",
    "MASKED",
    "DataKey",
    "Erased",
    "Masked",
    "ReencryptReport",
    "RotationReport",
    "Vault",
    "key_store_location",
    "reencrypt",
    "scrub",
    "stored_value",
]

SEALED: Final = 0x01
FLAGGED: Final = 0x02
SENSITIVE: Final = 0x01

_HEADER: Final = struct.Struct(">BBI")  # kind, flags, data key generation
_NONCE: Final = 12
_CHECK_TEXT: Final = b"tasktrail master key check"
_NULL: Final = b"null"


DataKey = tuple[int, AESGCM]  # a scope's data key and its generation


class Erased:
    """The type of ERASED: what an erased value reads as in a state of history."""

    _instance: Erased | None = None

    def __new__(cls) -> Erased:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "ERASED"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "ERASED"


ERASED: Final = Erased()


class Masked:
    """The type of MASKED: a sensitive value in a state or diff shown to a reader who may not see
    it (History.state(at, mask=True)); faces render it as "<masked>"."""

    _instance: Masked | None = None

    def __new__(cls) -> Masked:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MASKED"

    def __reduce__(self) -> str:
        return "MASKED"


MASKED: Final = Masked()


def key_store_location(url: str, configured: str | None) -> str | None:
    """Where a store's key store lives: a file path, ":memory:", or None if it cannot be told."""
    if configured is not None:
        if configured in ("memory://", "sqlite://:memory:"):
            return ":memory:"
        if configured.startswith("sqlite:///") and len(configured) > len("sqlite:///"):
            return configured.removeprefix("sqlite:///")
        if configured.startswith(("postgresql://", "postgres://")):
            return configured
        raise ConfigError(
            f"cannot read the key store URL {configured!r}: use sqlite:///PATH, "
            "postgresql://USER@HOST/DB?schema=NAME or memory://"
        )
    if url == "memory://" or url.removeprefix("sqlite://") in (":memory:", "/:memory:"):
        return ":memory:"
    if url.startswith("sqlite:///"):
        return url.removeprefix("sqlite:///") + ".keys"
    return None


# -- the stored forms ---------------------------------------------------------------------------


def stored_value(event: KeySet) -> bytes:
    """The projection bytes a set event stands for (what the fold and the write path store)."""
    if event.sealed is not None:
        return event.sealed
    if event.sensitive:
        return bytes((FLAGGED, SENSITIVE)) + bytes(event.value)
    return bytes(event.value)


def is_sensitive(stored: bytes) -> bool:
    """Whether a stored projection value was written with sensitive=True."""
    return bool(stored) and stored[0] in (SEALED, FLAGGED) and bool(stored[1] & SENSITIVE)


def _value_aad(scope_key: str, key: str, version: int, header: bytes) -> bytes:
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


def _wrap_aad(scope_key: str, generation: int, master_id: str) -> bytes:
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


class RotationReport(msgspec.Struct, frozen=True, kw_only=True):
    rewrapped: int
    data_keys: int
    retired: list[str]  # master key ids no data key needs any more


class Vault:
    """Seals and opens stored values; holds the master keys and the scopes' data keys.

    A vault without master keys is the plaintext store: it writes plain values and refuses
    sealed ones with a clear error.
    """

    def __init__(self, master_keys: Sequence[MasterKey] = (), store: KeyStore | None = None):
        self.masters = {k.key_id: k for k in master_keys}
        self.primary = master_keys[0] if master_keys else None
        self.store = store
        self._keys: dict[tuple[str, int], AESGCM] = {}
        self._current: dict[str, int] = {}  # scope key -> generation new values are sealed with

    @property
    def encrypting(self) -> bool:
        return self.primary is not None

    @classmethod
    def open(
        cls,
        url: str,
        master_keys: Sequence[str],
        key_store: str | None,
        *,
        read_only: bool = False,
    ) -> Vault:
        """The vault of the store at `url`; checks the master keys against its key store.

        `read_only`: the key store is opened without writing (nothing made, no check added);
        a store without a key store reads as unencrypted (nothing in it was ever sealed).
        """
        location = key_store_location(url, key_store)
        keys = parse_master_keys(master_keys)
        if not keys:
            found = (
                None
                if location is None
                else open_key_store(location, create=False, log_url=url, read_only=read_only)
            )
            if found is not None:
                found.close()
                raise MasterKeyError(
                    f"the store {_shown(url)} is encrypted (its key store {found.location} holds "
                    f"data keys); pass its master keys in StoreConfig(master_keys=[...]) or "
                    f"{MASTER_KEYS_ENV}"
                )
            return cls()
        if location is None:
            raise ConfigError(
                f"encryption needs a key store apart from the log for {_shown(url)!r}: set "
                "StoreConfig(key_store=...) to sqlite:///PATH (a file kept and backed up apart "
                "from the database) or postgresql://USER@HOST/DB?schema=NAME (another schema "
                "or database than the log's)"
            )
        if location == url:
            raise ConfigError("the key store must live apart from the log, not in its database")
        store = open_key_store(location, create=not read_only, log_url=url, read_only=read_only)
        if store is None:  # read-only, and there is none: nothing was ever sealed
            return cls()
        try:
            vault = cls(keys, store)
            vault._check_masters(_shown(url))
        except BaseException:
            store.close()
            raise
        return vault

    def _check_masters(self, url: str) -> None:
        assert self.store is not None
        assert self.primary is not None
        checks = self.store.checks()
        for key_id, sealed in checks.items():
            master = self.masters.get(key_id)
            if master is None:
                raise MasterKeyError(
                    f"the key store of {url} was written with master key {key_id}, which is not "
                    "among the master keys given; pass it too (after the new key, to rotate to "
                    "the new one with `tasktrail rotate-keys`)"
                )
            try:
                master.aead.decrypt(sealed[:_NONCE], sealed[_NONCE:], key_id.encode())
            except InvalidTag:
                raise MasterKeyError(
                    f"master key {key_id} is not the key the key store of {url} was written "
                    "with (its check does not open): the key is wrong"
                ) from None
        missing = sorted(self.store.master_ids() - self.masters.keys())
        if missing:
            raise MasterKeyError(
                f"data keys of {url} are wrapped by master keys {missing}, not given"
            )
        primary = self.primary
        if primary.key_id not in checks and not self.store.read_only:
            nonce = secrets.token_bytes(_NONCE)
            sealed = nonce + primary.aead.encrypt(nonce, _CHECK_TEXT, primary.key_id.encode())
            self.store.add_check(primary.key_id, sealed)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None

    # -- data keys --

    def missing(self, scope_keys: Iterable[str]) -> list[str]:
        """The scopes without a data key at hand (ensure_keys loads or makes them)."""
        if self.primary is None:
            return []
        return [s for s in dict.fromkeys(scope_keys) if s not in self._current]

    def data_key(self, scope_key: str) -> DataKey:
        generation = self._current[scope_key]
        return generation, self._keys[(scope_key, generation)]

    def ensure_keys(self, scope_keys: Iterable[str]) -> None:
        """Make sure each scope has a data key to seal new values with (one commit for all)."""
        primary = self.primary
        if primary is None:
            return
        wanted = [s for s in dict.fromkeys(scope_keys) if s not in self._current]
        if not wanted:
            return

        def make(scope_key: str, generation: int) -> tuple[str, bytes]:
            nonce = secrets.token_bytes(_NONCE)
            aad = _wrap_aad(scope_key, generation, primary.key_id)
            return primary.key_id, nonce + primary.aead.encrypt(
                nonce, AESGCM.generate_key(256), aad
            )

        for scope_key, generation, master_id, wrapped in self._store().current_keys(wanted, make):
            self._keys[(scope_key, generation)] = self._unwrap(
                scope_key, generation, master_id, wrapped
            )
            self._current[scope_key] = generation

    def refresh(self) -> None:
        """Forget cached data keys if another connection changed the key store (an erasure, a
        new generation), so this process never seals with, or opens with, a destroyed key."""
        if self.store is not None and self.store.changed():
            self._current.clear()
            self._keys.clear()

    def destroy(self, scope_key: str) -> int:
        """Erase the scope's data keys; values sealed with them never open again.

        Returns the last generation destroyed (0 when the scope had none)."""
        self._current.pop(scope_key, None)
        for pair in [p for p in self._keys if p[0] == scope_key]:
            del self._keys[pair]
        return 0 if self.store is None else self.store.destroy(scope_key)

    def _key(self, scope_key: str, generation: int) -> AESGCM | None:
        """The data key, or None if it was erased; raises if it is missing otherwise."""
        aead = self._keys.get((scope_key, generation))
        if aead is not None:
            return aead
        store = self._store()
        rows, erased = store.data_keys(scope_key)
        for _, found, master_id, wrapped in rows:
            if (scope_key, found) not in self._keys:
                self._keys[(scope_key, found)] = self._unwrap(scope_key, found, master_id, wrapped)
        aead = self._keys.get((scope_key, generation))
        if aead is not None:
            return aead
        if erased >= generation:
            return None
        raise DecryptionError(
            f"the data key {generation} of scope {scope_key!r} is not in the key store "
            f"{_shown(store.location)}: was the key store lost, or restored from another backup "
            "than the log?"
        )

    def _unwrap(self, scope_key: str, generation: int, master_id: str, wrapped: bytes) -> AESGCM:
        master = self.masters.get(master_id)
        if master is None:
            raise MasterKeyError(
                f"the data key of scope {scope_key!r} is wrapped by master key {master_id}, "
                "which is not given"
            )
        try:
            secret = master.aead.decrypt(
                wrapped[:_NONCE], wrapped[_NONCE:], _wrap_aad(scope_key, generation, master_id)
            )
        except InvalidTag:
            raise DecryptionError(
                f"the wrapped data key {generation} of scope {scope_key!r} does not open with "
                f"master key {master_id}: it was altered or moved"
            ) from None
        return AESGCM(secret)

    def _store(self) -> KeyStore:
        if self.store is None:
            raise MasterKeyError(
                f"this value is encrypted; open the store with its master keys "
                f"(StoreConfig(master_keys=[...]) or {MASTER_KEYS_ENV})"
            )
        return self.store

    # -- values --

    def seal(
        self, data_key: DataKey, scope_key: str, key: str, version: int, event: KeySet
    ) -> KeySet:
        """The set event with its plain value sealed for the row at (scope, key, version)."""
        generation, aead = data_key
        header = _HEADER.pack(SEALED, SENSITIVE if event.sensitive else 0, generation)
        nonce = secrets.token_bytes(_NONCE)
        aad = _value_aad(scope_key, key, version, header)
        sealed = header + nonce + aead.encrypt(nonce, bytes(event.value), aad)
        return msgspec.structs.replace(event, value=msgspec.Raw(_NULL), sealed=sealed)

    def open_stored(self, scope_key: str, key: str, version: int, stored: bytes) -> Any:
        """The value of stored bytes (projection or `stored_value` of an event), or ERASED."""
        encoded = self.open_json(scope_key, key, version, stored)
        return ERASED if encoded is None else decode_value(encoded)

    def open_json(self, scope_key: str, key: str, version: int, stored: bytes) -> bytes | None:
        """The JSON of a stored value, or None if it was erased (for faces that pass JSON on)."""
        if not stored:
            raise DecryptionError(f"the stored value of key {key!r} is empty")
        kind = stored[0]
        if kind == FLAGGED:
            return stored[2:]
        if kind != SEALED:
            return stored
        if len(stored) < _HEADER.size + _NONCE + 16:
            raise DecryptionError(f"the sealed value of key {key!r} in {scope_key!r} is truncated")
        header = stored[: _HEADER.size]
        _, _, generation = _HEADER.unpack(header)
        aead = self._key(scope_key, generation)
        if aead is None:
            return None
        body = stored[_HEADER.size :]
        try:
            return aead.decrypt(
                body[:_NONCE], body[_NONCE:], _value_aad(scope_key, key, version, header)
            )
        except InvalidTag:
            raise DecryptionError(
                f"the sealed value of key {key!r} in scope {scope_key!r} at version {version} "
                "does not open: it was altered, or moved from another row"
            ) from None

    def open_event(self, scope_key: str, version: int, event: KeySet) -> Any:
        """The value of a set event, or ERASED (sealed with an erased key, or scrubbed)."""
        if event.sealed is None and bytes(event.value) == _NULL:
            return ERASED
        return self.open_stored(scope_key, event.key, version, stored_value(event))

    def rotate(self) -> RotationReport:
        """Re-wrap every data key with the first master key, one commit per key (resumable),
        then retire the checks of master keys no data key needs any more."""
        primary = self.primary
        if primary is None:
            raise MasterKeyError("rotate-keys needs master keys: the new one first")
        store = self._store()
        rows = store.wrapped_by_others(primary.key_id)
        for row in rows:
            scope_key, generation, master_id, wrapped = row
            master = self.masters.get(master_id)
            if master is None:
                raise MasterKeyError(f"master key {master_id} is needed to rotate; pass it too")
            secret = master.aead.decrypt(
                wrapped[:_NONCE], wrapped[_NONCE:], _wrap_aad(scope_key, generation, master_id)
            )
            nonce = secrets.token_bytes(_NONCE)
            aad = _wrap_aad(scope_key, generation, primary.key_id)
            store.rewrap(row, primary.key_id, nonce + primary.aead.encrypt(nonce, secret, aad))
        retired = store.retire(primary.key_id)
        return RotationReport(rewrapped=len(rows), data_keys=store.count(), retired=retired)


class ReencryptReport(msgspec.Struct, frozen=True, kw_only=True):
    events: int  # set events read
    sealed: int  # plain values sealed by this run


async def reencrypt(
    backend: LogBackend,
    vault: Vault,
    progress: Callable[[int], None] | None = None,
    *,
    batch: int = 500,
) -> ReencryptReport:
    """Seal every plain value of the log and the projection, in place, batch by batch.

    For a store that held plain values before encryption was turned on. Each batch commits on
    its own, and sealed values are skipped, so an interrupted run continues where it stopped.
    Values of erased scopes are left to the erasure (they read as erased and were scrubbed).
    The log stays the same sequence of facts: each rewritten event holds the same value, now
    sealed for its own row, and its position, version, time, try and actor are untouched.
    """
    if not vault.encrypting:
        raise MasterKeyError(
            f"reencrypt needs master keys (StoreConfig(master_keys=[...]) or {MASTER_KEYS_ENV})"
        )
    scope_keys = {row.scope_id: row.scope_key for row in await backend.select_all_scopes()}
    read = sealed = 0
    pending: list[tuple[EventRow, KeySet]] = []

    async def flush() -> None:
        nonlocal sealed
        needed = [scope_keys[row.scope_id] for row, _ in pending]
        missing = vault.missing(needed)
        if missing:
            await anyio.to_thread.run_sync(vault.ensure_keys, missing)
        async with backend.write() as tx:
            # Under the write lock: a scope erased since the rows were read stays erased.
            erased = {
                scope_id: await _erased_through(backend, scope_id)
                for scope_id in {row.scope_id for row, _ in pending}
            }
            payloads: list[tuple[int, bytes]] = []
            values: list[tuple[bytes, int, str, int]] = []
            for row, event in pending:
                if row.seq < erased[row.scope_id]:
                    continue
                key = scope_keys[row.scope_id]
                new = vault.seal(vault.data_key(key), key, event.key, row.version, event)
                payloads.append((row.seq, encode_event(new)))
                values.append((stored_value(new), row.scope_id, event.key, row.seq))
            await tx.update_event_payloads(payloads)
            await tx.update_current_values(values)
        sealed += len(payloads)
        pending.clear()

    async for row in backend.select_all_events():
        if row.kind != "set":
            continue
        read += 1
        if progress is not None:
            progress(1)
        event = decode_event(row.payload)
        assert isinstance(event, KeySet)
        if event.sealed is not None or bytes(event.value) == _NULL:
            continue
        if row.scope_id not in scope_keys:  # a scope made after the run started
            scope_keys.update((r.scope_id, r.scope_key) for r in await backend.select_all_scopes())
        pending.append((row, event))
        if len(pending) >= batch:
            await flush()
    if pending:
        await flush()
    if sealed:
        await backend.checkpoint()  # the old pages leave the write-ahead log too
    return ReencryptReport(events=read, sealed=sealed)


async def scrub(backend: LogBackend, scope_id: int, through_seq: int) -> int:
    """Remove the plain values of a scope's set events before `through_seq` (an erasure).

    Sealed values are left as they are: their data key is gone. Returns the events rewritten.
    """
    rows = await backend.select_events(
        scope_id, EventFilter(kinds=frozenset({"set"}), through_seq=through_seq)
    )
    payloads: list[tuple[int, bytes]] = []
    for row in rows:
        event = decode_event(row.payload)
        assert isinstance(event, KeySet)
        if event.sealed is None and bytes(event.value) != _NULL:
            scrubbed = msgspec.structs.replace(event, value=msgspec.Raw(_NULL))
            payloads.append((row.seq, encode_event(scrubbed)))
    if payloads:
        async with backend.write() as tx:
            await tx.update_event_payloads(payloads)
        await backend.checkpoint()  # the old pages leave the write-ahead log too
    return len(payloads)


async def _erased_through(backend: LogBackend, scope_id: int) -> int:
    marker = await backend.select_last_scope_event(scope_id, "erased")
    return 0 if marker is None else marker.seq


def _shown(url: str) -> str:
    """A URL or path for a message: no password."""
    return re.sub(r"//([^/@:]*):[^/@]*@", r"//\1:***@", url)
