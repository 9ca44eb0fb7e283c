"""The difference between two states: keys added, removed, and changed (old, new)."""

from __future__ import annotations

from typing import Any

import msgspec

from eventstore.log.envelope import MASKED

__all__ = ["Diff", "diff_states", "masked"]


class Diff(msgspec.Struct, frozen=True, kw_only=True):
    """What changed between two states: keys added, removed, and changed as (old, new)."""

    added: dict[str, Any]
    removed: dict[str, Any]
    changed: dict[str, tuple[Any, Any]]

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)


def diff_states(old: dict[str, Any], new: dict[str, Any]) -> Diff:
    """The dictionary difference of two states."""
    return Diff(
        added={k: v for k, v in new.items() if k not in old},
        removed={k: v for k, v in old.items() if k not in new},
        changed={
            k: (old[k], new[k])
            for k in sorted(old.keys() & new.keys())
            if not _same(old[k], new[k])
        },
    )


def _same(a: Any, b: Any) -> bool:
    """JSON equality: 1, 1.0 and True are three different values."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def masked(state: dict[str, Any], sensitive: set[str]) -> dict[str, Any]:
    """The state with each value written sensitive read as MASKED."""
    return {k: MASKED if k in sensitive else v for k, v in state.items()}
