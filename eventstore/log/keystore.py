"""Key stores: where the wrapped data keys live, apart from the log.

A key store holds, per scope, its data keys (wrapped by a master key, one row per generation), a
tombstone per erased scope, and one check per master key (a known text sealed under it). It knows
nothing of cryptography: `eventstore.log.vault.Vault` wraps and unwraps, the key store keeps bytes.

The calls are awaited on the caller's event loop, like the log's: `SQLiteKeyStore`
(eventstore.log.backends.sqlite.keys) is a SQLite file (or memory), its blocking calls made from a
worker thread; `PostgresKeys` (eventstore.log.backends.postgres.keys) is a PostgreSQL schema, for
stores whose replicas share it; `eventstore.log.backends.open_key_store` picks one by location.
Only `changed` is plain: the vault asks it on its hot paths, and it reads no table.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

__all__ = ["DataKeyRow", "KeyStore", "MakeKey"]

# (scope key, generation, id of the master key that wrapped it, wrapped key)
DataKeyRow = tuple[str, int, str, bytes]
# Wraps a new data key for (scope key, generation): returns (master key id, wrapped key).
MakeKey = Callable[[str, int], tuple[str, bytes]]


class KeyStore(ABC):
    """The storage interface of the wrapped data keys (see the module doc)."""

    location: str  # for messages: a path, or a URL without its password
    read_only: bool = False  # opened without writing: every write raises ReadOnlyStoreError

    @abstractmethod
    async def checks(self) -> dict[str, bytes]:
        """The master key checks, by master key id."""

    @abstractmethod
    async def add_check(self, key_id: str, sealed: bytes) -> None: ...

    @abstractmethod
    async def master_ids(self) -> set[str]:
        """The master keys that wrap at least one data key."""

    @abstractmethod
    async def current_keys(self, scope_keys: Sequence[str], make: MakeKey) -> list[DataKeyRow]:
        """Each scope's newest data key, made (by `make`) for scopes without one, in one
        transaction: two processes making the first key of a scope at once agree on one. A new
        key's generation follows the scope's erased ones."""

    @abstractmethod
    async def data_keys(self, scope_key: str) -> tuple[list[DataKeyRow], int]:
        """Every data key of the scope, and the last generation erased (0: none)."""

    @abstractmethod
    async def destroy(self, scope_key: str) -> int:
        """Delete the scope's data keys and record its tombstone; returns the last generation
        destroyed (0 when it had none)."""

    @abstractmethod
    async def wrapped_by_others(self, key_id: str) -> list[DataKeyRow]:
        """The data keys wrapped by a master key other than `key_id`."""

    @abstractmethod
    async def rewrap(self, row: DataKeyRow, key_id: str, wrapped: bytes) -> None:
        """Replace one data key's wrapping, if it is still wrapped as `row` says (one commit)."""

    @abstractmethod
    async def retire(self, keep: str) -> list[str]:
        """Remove the checks of master keys, other than `keep`, that wrap no data key."""

    @abstractmethod
    async def count(self) -> int:
        """How many data keys there are."""

    @abstractmethod
    def changed(self) -> bool:
        """Whether another connection changed the key store since this one last looked."""

    @abstractmethod
    async def aclose(self) -> None: ...
