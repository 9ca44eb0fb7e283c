"""Rebuild and verify: the projection recomputed from the log, and the proof that they agree."""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from eventstore.log.backends.base import LogBackend
from eventstore.log.backends.rows import CurrentRow, Insert
from projections.current import ScopeState, apply

__all__ = ["Mismatch", "VerifyReport", "fold_log", "rebuild", "verify"]

Progress = Callable[[int], None]


class Mismatch(msgspec.Struct, frozen=True):
    """A key where the projection and the fold of the log disagree."""

    scope_id: int
    key: str
    in_projection: CurrentRow | None
    from_log: CurrentRow | None


class VerifyReport(msgspec.Struct, frozen=True, kw_only=True):
    ok: bool
    events: int
    scopes: int
    keys: int
    mismatches: list[Mismatch]
    # With an archive: files missing or not matching their manifest's checksum.
    archive_problems: list[str] = msgspec.field(default_factory=list)


async def fold_log(backend: LogBackend, progress: Progress | None = None) -> dict[int, ScopeState]:
    """Fold every event of the log, streamed, into the state of each scope."""
    states: dict[int, ScopeState] = {}
    count = 0
    async for row in backend.select_all_events():
        apply(states.setdefault(row.scope_id, {}), row)
        count += 1
        if progress is not None and count % 1000 == 0:
            progress(1000)
    if progress is not None:
        progress(count % 1000)
    return states


async def verify(backend: LogBackend, progress: Progress | None = None) -> VerifyReport:
    counted = 0

    def count(n: int) -> None:
        nonlocal counted
        counted += n
        if progress is not None:
            progress(n)

    # Holding the write lock keeps the log and the projection still while they are compared.
    async with backend.snapshot():
        folded = await fold_log(backend, count)
        stored: dict[tuple[int, str], CurrentRow] = {
            (row.scope_id, row.key): row for row in await backend.select_current()
        }
    expected = {(s, k): row for s, state in folded.items() for k, row in state.items()}
    mismatches = [
        Mismatch(
            scope_id=pair[0],
            key=pair[1],
            in_projection=stored.get(pair),
            from_log=expected.get(pair),
        )
        for pair in sorted(stored.keys() | expected.keys())
        if stored.get(pair) != expected.get(pair)
    ]
    return VerifyReport(
        ok=not mismatches,
        events=counted,
        scopes=len(folded),
        keys=len(expected),
        mismatches=mismatches,
    )


async def rebuild(backend: LogBackend, progress: Progress | None = None) -> int:
    """Recompute the projection from the log and replace it; returns the number of keys."""
    async with backend.write() as tx:
        folded = await fold_log(backend, progress)
        rows = [row for state in folded.values() for row in state.values()]
        await tx.delete_current(every=True)
        await tx.insert(Insert(current=rows))
    return len(rows)
