"""The vault: seals and opens stored values with per-scope data keys, kept wrapped under the
master keys in a key store apart from the log.

The master keys come from `StoreConfig.master_keys` (or `TASKTRAIL_MASTER_KEYS`): the first one
wraps new data keys, every one of them unwraps. Each scope has its own random 256-bit data key,
kept wrapped (AES-GCM under a master key) in a key store that lives apart from the log: for a
SQLite file `PATH`, the SQLite file `PATH.keys`; `StoreConfig.key_store` names another place.
Destroying a scope's data keys (`Store.erase`) makes every value of the scope unreadable, in the
live database and in every backup of the log (crypto-shredding).

`Vault` is the one seam every reader and the write path go through; the stored forms are in
`eventstore.log.envelope`. Its calls that may reach the key store are awaited; opening a value is
not, so that a read of many values pays nothing per value: a reader first asks `unready` of the
values it holds (plain work, no await) and awaits `load_keys` for the rare scope whose data keys are
not at hand yet, then opens them.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import anyio
import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from eventstore.log.backends import open_key_store
from eventstore.log.envelope import (
    ERASED,
    FLAGGED,
    HEADER,
    NONCE,
    NULL_JSON,
    SEALED,
    SENSITIVE,
    stored_value,
    value_aad,
    wrap_aad,
)
from eventstore.log.errors import ConfigError, DecryptionError, MasterKeyError
from eventstore.log.events import KeySet
from eventstore.log.keystore import KeyStore
from eventstore.log.master_keys import MASTER_KEYS_ENV, MasterKey, parse_master_keys
from eventstore.log.values import decode_value

__all__ = ["DataKey", "RotationReport", "Vault", "key_store_location"]

_CHECK_TEXT: Final = b"tasktrail master key check"

DataKey = tuple[int, AESGCM]  # a scope's data key and its generation


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
        # scope key -> its last generation erased, for the scopes whose keys load_keys fetched
        self._loaded: dict[str, int] = {}

    @property
    def encrypting(self) -> bool:
        return self.primary is not None

    @classmethod
    async def open(
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
                else await open_key_store(location, create=False, log_url=url, read_only=read_only)
            )
            if found is not None:
                await found.aclose()
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
        store = await open_key_store(
            location, create=not read_only, log_url=url, read_only=read_only
        )
        if store is None:  # read-only, and there is none: nothing was ever sealed
            return cls()
        try:
            vault = cls(keys, store)
            await vault._check_masters(_shown(url))
        except BaseException:
            with anyio.CancelScope(shield=True):
                await store.aclose()
            raise
        return vault

    async def _check_masters(self, url: str) -> None:
        assert self.store is not None
        assert self.primary is not None
        checks = await self.store.checks()
        for key_id, sealed in checks.items():
            master = self.masters.get(key_id)
            if master is None:
                raise MasterKeyError(
                    f"the key store of {url} was written with master key {key_id}, which is not "
                    "among the master keys given; pass it too (after the new key, to rotate to "
                    "the new one with `tasktrail rotate-keys`)"
                )
            try:
                master.aead.decrypt(sealed[:NONCE], sealed[NONCE:], key_id.encode())
            except InvalidTag:
                raise MasterKeyError(
                    f"master key {key_id} is not the key the key store of {url} was written "
                    "with (its check does not open): the key is wrong"
                ) from None
        missing = sorted(await self.store.master_ids() - self.masters.keys())
        if missing:
            raise MasterKeyError(
                f"data keys of {url} are wrapped by master keys {missing}, not given"
            )
        primary = self.primary
        if primary.key_id not in checks and not self.store.read_only:
            nonce = secrets.token_bytes(NONCE)
            sealed = nonce + primary.aead.encrypt(nonce, _CHECK_TEXT, primary.key_id.encode())
            await self.store.add_check(primary.key_id, sealed)

    async def aclose(self) -> None:
        store, self.store = self.store, None
        if store is not None:
            await store.aclose()

    # -- data keys --

    def missing(self, scope_keys: Iterable[str]) -> list[str]:
        """The scopes without a data key at hand (ensure_keys loads or makes them)."""
        if self.primary is None:
            return []
        return [s for s in dict.fromkeys(scope_keys) if s not in self._current]

    def data_key(self, scope_key: str) -> DataKey:
        generation = self._current[scope_key]
        return generation, self._keys[(scope_key, generation)]

    async def ensure_keys(self, scope_keys: Iterable[str]) -> None:
        """Make sure each scope has a data key to seal new values with (one commit for all)."""
        primary = self.primary
        if primary is None:
            return
        wanted = [s for s in dict.fromkeys(scope_keys) if s not in self._current]
        if not wanted:
            return

        def make(scope_key: str, generation: int) -> tuple[str, bytes]:
            nonce = secrets.token_bytes(NONCE)
            aad = wrap_aad(scope_key, generation, primary.key_id)
            return primary.key_id, nonce + primary.aead.encrypt(
                nonce, AESGCM.generate_key(256), aad
            )

        for scope_key, generation, master_id, wrapped in await self._store().current_keys(
            wanted, make
        ):
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
            self._loaded.clear()

    async def destroy(self, scope_key: str) -> int:
        """Erase the scope's data keys; values sealed with them never open again.

        Returns the last generation destroyed (0 when the scope had none)."""
        self._current.pop(scope_key, None)
        self._loaded.pop(scope_key, None)
        for pair in [p for p in self._keys if p[0] == scope_key]:
            del self._keys[pair]
        return 0 if self.store is None else await self.store.destroy(scope_key)

    def unready(self, scope_key: str, stored: Iterable[bytes] | None = None) -> bool:
        """Whether `load_keys(scope_key)` must be awaited before these stored values of the scope
        open (None: any value of it, when the values are not at hand). Plain work, no I/O."""
        if self.store is None:
            return False
        if stored is None:
            return scope_key not in self._loaded
        erased = self._loaded.get(scope_key, 0)
        keys = self._keys
        for value in stored:
            if value and value[0] == SEALED and len(value) >= HEADER.size:
                generation = HEADER.unpack_from(value)[2]
                if generation > erased and (scope_key, generation) not in keys:
                    return True
        return False

    async def ready(self, wanted: Mapping[str, Sequence[bytes] | None]) -> None:
        """Fetch the data keys the scopes' stored values need (see `unready`) until all are at
        hand: on return they open without awaiting, until the caller next awaits (another
        task's `refresh` may drop them then). A key the key store lacks is fetched once, and
        opening its value then raises."""
        fetched: set[str] = set()
        while missing := [
            s
            for s, stored in wanted.items()
            if self.unready(s, stored) and not (s in fetched and s in self._loaded)
        ]:
            for scope_key in missing:
                fetched.add(scope_key)
                await self.load_keys(scope_key)

    async def load_keys(self, scope_key: str) -> None:
        """Fetch every data key of the scope from the key store, for its values to open."""
        rows, erased = await self._store().data_keys(scope_key)
        for _, found, master_id, wrapped in rows:
            if (scope_key, found) not in self._keys:
                self._keys[(scope_key, found)] = self._unwrap(scope_key, found, master_id, wrapped)
        self._loaded[scope_key] = erased

    def _key(self, scope_key: str, generation: int) -> AESGCM | None:
        """The data key, or None if it was erased; raises if it is missing otherwise."""
        aead = self._keys.get((scope_key, generation))
        if aead is not None:
            return aead
        store = self._store()
        erased = self._loaded.get(scope_key)
        if erased is None:
            raise RuntimeError(
                f"the data keys of scope {scope_key!r} were not loaded: await "
                "Vault.load_keys before opening its values (see Vault.unready)"
            )
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
                wrapped[:NONCE], wrapped[NONCE:], wrap_aad(scope_key, generation, master_id)
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
        header = HEADER.pack(SEALED, SENSITIVE if event.sensitive else 0, generation)
        nonce = secrets.token_bytes(NONCE)
        aad = value_aad(scope_key, key, version, header)
        sealed = header + nonce + aead.encrypt(nonce, bytes(event.value), aad)
        return msgspec.structs.replace(event, value=msgspec.Raw(NULL_JSON), sealed=sealed)

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
        if len(stored) < HEADER.size + NONCE + 16:
            raise DecryptionError(f"the sealed value of key {key!r} in {scope_key!r} is truncated")
        header = stored[: HEADER.size]
        _, _, generation = HEADER.unpack(header)
        aead = self._key(scope_key, generation)
        if aead is None:
            return None
        body = stored[HEADER.size :]
        try:
            return aead.decrypt(
                body[:NONCE], body[NONCE:], value_aad(scope_key, key, version, header)
            )
        except InvalidTag:
            raise DecryptionError(
                f"the sealed value of key {key!r} in scope {scope_key!r} at version {version} "
                "does not open: it was altered, or moved from another row"
            ) from None

    def open_event(self, scope_key: str, version: int, event: KeySet) -> Any:
        """The value of a set event, or ERASED (sealed with an erased key, or scrubbed)."""
        if event.sealed is None and bytes(event.value) == NULL_JSON:
            return ERASED
        return self.open_stored(scope_key, event.key, version, stored_value(event))

    async def rotate(self) -> RotationReport:
        """Re-wrap every data key with the first master key, one commit per key (resumable),
        then retire the checks of master keys no data key needs any more."""
        primary = self.primary
        if primary is None:
            raise MasterKeyError("rotate-keys needs master keys: the new one first")
        store = self._store()
        rows = await store.wrapped_by_others(primary.key_id)
        for row in rows:
            scope_key, generation, master_id, wrapped = row
            master = self.masters.get(master_id)
            if master is None:
                raise MasterKeyError(f"master key {master_id} is needed to rotate; pass it too")
            secret = master.aead.decrypt(
                wrapped[:NONCE], wrapped[NONCE:], wrap_aad(scope_key, generation, master_id)
            )
            nonce = secrets.token_bytes(NONCE)
            aad = wrap_aad(scope_key, generation, primary.key_id)
            await store.rewrap(
                row, primary.key_id, nonce + primary.aead.encrypt(nonce, secret, aad)
            )
        retired = await store.retire(primary.key_id)
        return RotationReport(rewrapped=len(rows), data_keys=await store.count(), retired=retired)


def _shown(url: str) -> str:
    """A URL or path for a message: no password."""
    return re.sub(r"//([^/@:]*):[^/@]*@", r"//\1:***@", url)
