"""A stored event as readers see it: decoded, its value opened through the vault."""

from __future__ import annotations

from typing import Any

import msgspec

from eventstore.log.backends.rows import EventRow
from eventstore.log.envelope import ERASED
from eventstore.log.events import (
    KeyDeleted,
    KeySet,
    RecordedEvent,
    ScopeCleared,
    decode_event,
    from_micros,
)
from eventstore.log.scopes import Scope, scope_key
from eventstore.log.vault import Vault

__all__ = ["recorded_event"]


def recorded_event(
    row: EventRow,
    scope: Scope,
    vault: Vault | None = None,
    *,
    erased_before: int = 0,
    scope_key_: str | None = None,
) -> RecordedEvent:
    """Decode a stored event for readers; values open through the vault.

    `erased_before`: the position of the scope's last `erased` marker; a value before it reads
    as erased (value None, erased=True) whatever copy of it is left.
    """
    event = decode_event(row.payload)
    value: Any = None
    detail = None
    expires_at = None
    sensitive = erased = cleared = False
    rewound_to: int | None = None
    match event:
        case KeySet(expires_at=expires, sensitive=sensitive, rewound_to=rewound_to):
            expires_at = expires
            cleared = event.sensitive_cleared is True
            if row.seq < erased_before:
                erased = True
            else:
                value = (vault or _PLAIN).open_event(
                    scope_key_ or scope_key(scope), row.version, event
                )
                if value is ERASED:
                    value, erased = None, True
        case KeyDeleted(rewound_to=rewound_to):
            pass
        case ScopeCleared(all_map_indices=False):
            pass
        case ScopeCleared():
            detail = {"all_map_indices": True}
        case _:
            detail = msgspec.to_builtins(event)
            detail.pop("kind", None)
    return RecordedEvent(
        seq=row.seq,
        version=row.version,
        kind=row.kind,  # type: ignore[arg-type]
        scope=scope,
        key=row.key,
        value=value,
        expires_at=expires_at,
        recorded_at=from_micros(row.recorded_at),
        try_number=row.try_number,
        actor=row.actor,
        detail=detail,
        sensitive=sensitive,
        sensitive_cleared=cleared,
        erased=erased,
        rewound_to=rewound_to,
    )


_PLAIN = Vault()
