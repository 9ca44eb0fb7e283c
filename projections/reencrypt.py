"""Re-encryption: seal, in place, every plain value a store held before encryption was on."""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from eventstore.log.backends.base import LogBackend
from eventstore.log.backends.rows import EventRow
from eventstore.log.envelope import NULL_JSON, stored_value
from eventstore.log.errors import MasterKeyError
from eventstore.log.events import KeySet, decode_event, encode_event
from eventstore.log.master_keys import MASTER_KEYS_ENV
from eventstore.log.vault import Vault

__all__ = ["ReencryptReport", "reencrypt"]


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
    scope_keys = {row.scope_id: row.scope_key for row in await backend.select_scopes()}
    read = sealed = 0
    pending: list[tuple[EventRow, KeySet]] = []

    async def flush() -> None:
        nonlocal sealed
        needed = {scope_keys[row.scope_id] for row, _ in pending}
        missing = vault.missing(needed)
        if missing:
            await vault.ensure_keys(missing)
        # Taken now, as a batch of appends takes them: a refresh while the write lock is awaited
        # may forget every key at hand.
        data_keys = {key: vault.data_key(key) for key in needed}
        async with backend.write() as tx:
            # Under the write lock: a scope erased since the rows were read stays erased.
            erased = {
                scope_id: marker.seq
                for (scope_id, _), marker in (
                    await backend.select_markers({row.scope_id for row, _ in pending}, ["erased"])
                ).items()
            }
            payloads: list[tuple[int, bytes]] = []
            values: list[tuple[bytes, int, str, int]] = []
            for row, event in pending:
                if row.seq < erased.get(row.scope_id, 0):
                    continue
                key = scope_keys[row.scope_id]
                new = vault.seal(data_keys[key], key, event.key, row.version, event)
                payloads.append((row.seq, encode_event(new)))
                values.append((stored_value(new), row.scope_id, event.key, row.seq))
            await tx.update_stored(payloads=payloads, values=values)
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
        if event.sealed is not None or bytes(event.value) == NULL_JSON:
            continue
        if row.scope_id not in scope_keys:  # a scope made after the run started
            scope_keys.update((r.scope_id, r.scope_key) for r in await backend.select_scopes())
        pending.append((row, event))
        if len(pending) >= batch:
            await flush()
    if pending:
        await flush()
    if sealed:
        await backend.checkpoint()  # the old pages leave the write-ahead log too
    return ReencryptReport(events=read, sealed=sealed)
