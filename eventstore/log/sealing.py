"""The data keys of a batch, found (or made, or destroyed) before the log's transaction."""

from __future__ import annotations

from collections.abc import Sequence

from eventstore.log.requests import AppendRequest, EraseOp, SetOp
from eventstore.log.scopes import scope_key
from eventstore.log.vault import DataKey, Vault

__all__ = ["BatchKeys", "prepare_keys"]


class BatchKeys:
    """What `prepare_keys` did for a batch, by id of the request."""

    __slots__ = ("erased", "sealing")

    def __init__(self) -> None:
        self.sealing: dict[int, DataKey] = {}  # the data key a request seals its values with
        self.erased: dict[int, int] = {}  # the data key generations an erasure destroyed


async def prepare_keys(vault: Vault | None, requests: Sequence[AppendRequest]) -> BatchKeys:
    """Find the data key each request seals with, and destroy the keys of erased scopes.

    Runs before the log's transaction: a new data key is committed to the key store before any
    value sealed with it, and an erased scope's keys are destroyed before its marker is written.
    Requests are taken in order, so a set queued after an erasure gets a new data key.
    """
    prepared = BatchKeys()
    if vault is None or vault.store is None:
        return prepared
    vault.refresh()
    erasing = any(isinstance(op, EraseOp) for r in requests for op in r.ops)
    sealing = [
        r for r in requests if vault.encrypting and any(isinstance(op, SetOp) for op in r.ops)
    ]
    if not erasing:
        missing = vault.missing([scope_key(r.scope) for r in sealing])
        if missing:
            await vault.ensure_keys(missing)
        for r in sealing:
            prepared.sealing[id(r)] = vault.data_key(scope_key(r.scope))
        return prepared
    for r in requests:
        key = scope_key(r.scope)
        if any(isinstance(op, EraseOp) for op in r.ops):
            prepared.erased[id(r)] = await vault.destroy(key)
        if vault.encrypting and any(isinstance(op, SetOp) for op in r.ops):
            if vault.missing([key]):
                await vault.ensure_keys([key])
            prepared.sealing[id(r)] = vault.data_key(key)
    return prepared
