"""Rewind: make a scope's current values what they were at a past point, by appending.

A rewind never removes or rewrites history. It reads the state as of the point (with every check
`History.state` makes, so a point compaction can no longer answer raises
`HistoryCompactedError`), compares it with the current values, and appends, in one request (one
transaction), a `set` for every key whose value, expiry or sensitive flag differs and a `delete`
for every live key the point did not have. Each of those events carries `rewound_to`: the
global position the point resolved to, so history shows a rewind and not a task write.

- A key's value comes back byte for byte (its JSON as first written), with its original
  absolute expiry and its sensitive flag; a sealed value is opened and sealed again for its new
  version, so a store that encrypts keeps it encrypted.
- A key whose original expiry has passed by now stays absent: rewinding cannot bring back what
  retention already took.
- A value erased with its scope (crypto-shredding) cannot come back either; it stays absent.
- The plan is made against the scope's version as read before the current values, and the
  append expects that version, so a write landing in between makes the rewind plan again
  (or raise `ConcurrencyError`, when the caller gave `expected_version`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from eventstore.log.backends.rows import EventRow
from eventstore.log.config import NEVER_EXPIRE
from eventstore.log.envelope import ERASED, is_sensitive, stored_value
from eventstore.log.errors import ConcurrencyError, HistoryCompactedError
from eventstore.log.events import KeySet, decode_event, from_micros, to_micros
from eventstore.log.requests import AppendRequest, DeleteOp, Op, SetOp
from eventstore.log.scopes import scope_key
from projections.diff import Diff, diff_states
from projections.points import At

if TYPE_CHECKING:
    # Only a type: history calls into rewind, never the other way round.
    from projections.history import History

__all__ = ["RewindResult", "rewind"]

# A rewind that keeps losing the race against the scope's writers (each lost race is a write
# that landed) gives up after this many plans with ConcurrencyError.
_ATTEMPTS = 100


class RewindResult(msgspec.Struct, frozen=True, kw_only=True):
    """What a rewind did (or, with dry_run, would do).

    `version`: the scope's version after the rewind (its current one for a dry run or a rewind
    with nothing to change); `seq`: the position of its last event (None if it appended none);
    `set` and `deleted`: the keys it set and deleted; `diff`: from the current values to the
    values after the rewind; `rewound_to`: the global position the point resolved to.
    """

    point: str
    rewound_to: int
    version: int
    seq: int | None
    set: list[str]
    deleted: list[str]
    diff: Diff
    dry_run: bool = False


class _Target(msgspec.Struct, frozen=True):
    json: bytes
    expires_at: int | None
    sensitive: bool


async def rewind(
    history: History,
    at: At,
    *,
    try_number: int | None = None,
    actor: str = "system",
    expected_version: int | None = None,
    dry_run: bool = False,
) -> RewindResult:
    """Append, in one transaction, the sets and deletes that make the current values equal
    `state(at)`; `dry_run=True` plans and writes nothing. `History.rewind` is this function.

    See the module's docstring. Fencing is that of any write with `try_number`.
    """
    append, now = history.write_path()
    backend = history.backend
    scope = history.scope
    skey = scope_key(scope)
    for _ in range(_ATTEMPTS):
        # The state first: it makes every check of a history question (compaction, points that
        # never were) before anything is planned.
        state = await history.state(at)
        position = await history.resolve(at)
        scope_id = await backend_scope_id(history)
        version = 0
        current: dict[str, tuple[bytes, int | None, bool, Any]] = {}
        now_us = to_micros(now())
        if scope_id is not None:
            head = await backend.select_scope(scope_key(history.scope))
            version = 0 if head is None else head.version
            rows = await backend.select_current(scope_id)
            values = [row.value for row in rows]
            if history.vault.unready(skey, values):
                await history.vault.ready({skey: values})
            for row in rows:
                if row.expires_at is not None and row.expires_at <= now_us:
                    continue
                encoded = history.vault.open_json(skey, row.key, row.version, row.value)
                if encoded is None:  # erased: reads as absent
                    continue
                current[row.key] = (
                    encoded,
                    row.expires_at,
                    is_sensitive(row.value),
                    msgspec.json.decode(encoded),
                )
        if expected_version is not None and expected_version != version:
            raise ConcurrencyError(scope, expected_version, version)
        target = await _targets(history, scope_id, position.seq, state, now_us)
        ops: list[Op] = []
        to_set: list[str] = []
        for key, want in target.items():
            have = current.get(key)
            if have is not None and have[:3] == (want.json, want.expires_at, want.sensitive):
                continue
            to_set.append(key)
            ops.append(
                SetOp(
                    key,
                    want.json,
                    retention=NEVER_EXPIRE if want.expires_at is None else None,
                    expires_at=None if want.expires_at is None else from_micros(want.expires_at),
                    sensitive=want.sensitive,
                    rewound_to=position.seq,
                )
            )
        # The plan is the result of a dry run; a rewind that appends adds its version and seq.
        planned = RewindResult(
            point=str(at),
            rewound_to=position.seq,
            version=version,
            seq=None,
            set=to_set,
            deleted=sorted(k for k in current if k not in target),
            diff=diff_states(
                {k: v[3] for k, v in current.items()},
                {k: msgspec.json.decode(t.json) for k, t in target.items()},
            ),
            dry_run=dry_run,
        )
        ops += [DeleteOp(k, rewound_to=position.seq) for k in planned.deleted]
        if dry_run or not ops:
            return planned
        try:
            result = await append(
                AppendRequest(
                    scope=scope,
                    ops=ops,
                    try_number=try_number,
                    actor=actor,
                    expected_version=version,
                )
            )
        except ConcurrencyError:
            if expected_version is not None:
                raise
            continue  # another write landed since the plan: plan again
        return msgspec.structs.replace(planned, version=result.version, seq=result.seq)
    raise ConcurrencyError(scope, version, await _version(history))


async def backend_scope_id(history: History) -> int | None:
    row = await history.backend.select_scope(scope_key(history.scope))
    return None if row is None else row.scope_id


async def _version(history: History) -> int:
    row = await history.backend.select_scope(scope_key(history.scope))
    return 0 if row is None else row.version


async def _targets(
    history: History, scope_id: int | None, through_seq: int, state: dict[str, Any], now: int
) -> dict[str, _Target]:
    """The keys of `state` to bring back, each with its JSON, absolute expiry and flag.

    The latest event of each key at the position (after the last clear) is the one `state`
    read; its stored JSON, expiry and flag are what come back. Keys erased, or expired by now,
    stay absent.
    """
    if scope_id is None or not state:
        return {}
    backend = history.backend
    skey = scope_key(history.scope)
    markers = await backend.select_markers([scope_id], ["clear"], through_seq=through_seq)
    clear = markers.get((scope_id, "clear"))
    rows: dict[str, EventRow] = {
        row.key: row
        for row in await backend.select_latest_per_key(
            scope_id, after_seq=0 if clear is None else clear.seq, through_seq=through_seq
        )
        if row.key is not None and row.kind == "set"
    }
    if history.vault.unready(skey):
        await history.vault.ready({skey: None})
    targets: dict[str, _Target] = {}
    for key, value in state.items():
        if value is ERASED:
            continue
        row = rows.get(key)
        if row is None:
            # The state was answered from events this log no longer holds (an archive):
            # without the event its expiry is unknown, so refuse rather than guess.
            raise HistoryCompactedError(
                history.scope, f"rewind to the value of {key!r}", await history.answerable_from()
            )
        if row.expires_at is not None and row.expires_at <= now:
            continue
        event = decode_event(row.payload)
        assert isinstance(event, KeySet)
        encoded = history.vault.open_json(skey, key, row.version, stored_value(event))
        if encoded is None:
            continue
        targets[key] = _Target(bytes(encoded), row.expires_at, event.sensitive)
    return targets
