"""The current-values projection as a fold over the log: `apply(state, event)`.

The backends keep this projection in a table, updated in the same transaction as each append;
this fold is the definition that `verify` and `rebuild` hold the table to.
"""

from __future__ import annotations

from eventstore.log.backends.rows import CurrentRow, EventRow
from eventstore.log.envelope import stored_value
from eventstore.log.events import KeySet, decode_event

__all__ = ["ScopeState", "apply"]

# key -> the row the projection holds for it, expired or not (expiry is applied on read)
ScopeState = dict[str, CurrentRow]


def apply(state: ScopeState, row: EventRow) -> None:
    """Apply one stored event to the state of its scope."""
    match row.kind:
        case "set":
            event = decode_event(row.payload)
            assert isinstance(event, KeySet)
            state[event.key] = CurrentRow(
                scope_id=row.scope_id,
                key=event.key,
                value=stored_value(event),  # sealed bytes stay sealed: verify compares them
                expires_at=row.expires_at,
                version=row.version,
                seq=row.seq,
                updated_at=row.recorded_at,
            )
        case "delete":
            assert row.key is not None
            state.pop(row.key, None)
        case "clear":  # an erasure is a clear, then its `erased` marker
            state.clear()
        case _:
            pass  # system markers do not change values
