"""Scrubbing: an erasure removes the plain values of a scope's past from the stored events."""

from __future__ import annotations

import msgspec

from eventstore.log.backends.base import LogBackend
from eventstore.log.backends.rows import EventFilter
from eventstore.log.envelope import NULL_JSON
from eventstore.log.events import KeySet, decode_event, encode_event

__all__ = ["scrub"]


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
        if event.sealed is None and bytes(event.value) != NULL_JSON:
            scrubbed = msgspec.structs.replace(event, value=msgspec.Raw(NULL_JSON))
            payloads.append((row.seq, encode_event(scrubbed)))
    if payloads:
        async with backend.write() as tx:
            await tx.update_stored(payloads=payloads)
        await backend.checkpoint()  # the old pages leave the write-ahead log too
    return len(payloads)
