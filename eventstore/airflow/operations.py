"""The backend's operations, against an open store (embedded) or a service (remote)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple, TypeAlias

import msgspec

from eventstore.airflow.settings import ACTOR
from eventstore.log.config import NEVER_EXPIRE
from eventstore.log.envelope import ERASED
from eventstore.log.events import to_micros
from eventstore.log.scopes import AssetScope, Scope, TaskScope
from eventstore.log.values import check_key, decode_value, encode_value
from eventstore.store import Store

if TYPE_CHECKING:
    from eventstore.client import Remote, RemoteAssetStore, RemoteTaskStore

# Where the backend writes: an open store (embedded) or a connection to a service (remote).
Target: TypeAlias = "Store | Remote"

__all__ = [
    "Target",
    "compact",
    "local_accessor",
    "log_report",
    "read_value",
    "write_clear",
    "write_delete",
    "write_set",
]


def local_accessor(store: Store, scope: Scope, try_number: int | None, actor: str = ACTOR) -> Any:
    if isinstance(scope, TaskScope):
        return store.open_task(scope, try_number, actor)
    return store.open_asset(scope, actor)


def remote_accessor(
    remote: Remote, scope: Scope, try_number: int | None
) -> RemoteTaskStore | RemoteAssetStore:
    """Through a service the actor is the token's (`api:<its name>`), whatever the writer."""
    if isinstance(scope, TaskScope):
        return remote.open_task(scope, try_number)
    return remote.open_asset(scope)


async def read_value(target: Target, scope: Scope, key: str) -> str | None:
    if not isinstance(target, Store):
        value = await remote_accessor(target, scope, None).get(check_key(key))
        return None if value is None else json.dumps(value)
    row = await target.read(scope, check_key(key))
    if row is None:
        return None
    value = target.open_value(scope, row)
    return None if value is ERASED else json.dumps(value)


async def write_set(
    target: Target,
    scope: Scope,
    key: str,
    value: Any,
    expires_at: datetime | None,
    try_number: int | None,
    actor: str = ACTOR,
    sensitive: bool = False,
) -> bool:
    """Append the set (unless it repeats the newest event); True if the store seals values."""
    sealed = isinstance(target, Store) and target.vault.encrypting
    if isinstance(scope, AssetScope):
        expires_at = None  # asset entries never expire
    wanted = _Wanted(scope, key, encode_value(key, value, 0), expires_at, try_number)
    if isinstance(target, Store):
        if await _is_repeat(target, wanted):
            return sealed
        accessor = local_accessor(target, scope, try_number, actor)
    else:
        if await _is_remote_repeat(target, wanted):
            return sealed
        accessor = remote_accessor(target, scope, try_number)
    if isinstance(scope, AssetScope):
        await accessor.set(key, value, sensitive=sensitive)
    elif expires_at is None:
        await accessor.set(key, value, retention=NEVER_EXPIRE, sensitive=sensitive)
    else:
        await accessor.set(key, value, expires_at=expires_at, sensitive=sensitive)
    return sealed


class _Wanted(NamedTuple):
    """The set write_set is about to append: a scope's key, its value as JSON, expiry and try."""

    scope: Scope
    key: str
    encoded: bytes
    expires_at: datetime | None
    try_number: int | None


async def _is_repeat(store: Store, wanted: _Wanted) -> bool:
    """Whether the scope's newest event already sets key to this value, expiry and try."""
    scope, key, encoded, expires_at, try_number = wanted
    row = await store.read(scope, key)
    if row is None or store.open_json(scope, row) != encoded:
        return False
    if row.expires_at != (None if expires_at is None else to_micros(expires_at)):
        return False
    if row.version != await store.version(scope):
        return False
    # The event that set the row: its try must be this one too.
    events = await store.history(scope).events(key=key, after_seq=row.seq - 1, limit=1)
    return len(events) == 1 and events[0].seq == row.seq and events[0].try_number == try_number


async def _is_remote_repeat(remote: Remote, wanted: _Wanted) -> bool:
    """`_is_repeat` through the service: the key's entry, then its newest events and the
    scope's version only when the value and expiry match (as they do on a repeat)."""
    scope, key, encoded, expires_at, try_number = wanted
    accessor = remote_accessor(remote, scope, None)
    entry = await accessor.entry(key)
    if entry is None or encode_value(key, decode_value(entry.value), 0) != encoded:
        return False
    if entry.expires_at != expires_at:
        return False
    # The key's events recorded since its entry was set: the newest is the set that made it.
    events = await remote.history(scope).events(key=key, since=entry.updated_at)
    if not events or events[-1].kind != "set" or events[-1].try_number != try_number:
        return False
    return events[-1].version == await accessor.version()


async def write_delete(
    target: Target, scope: Scope, key: str, try_number: int | None, actor: str = ACTOR
) -> None:
    if isinstance(target, Store):
        await local_accessor(target, scope, try_number, actor).delete(key)
    else:
        await remote_accessor(target, scope, try_number).delete(key)


async def write_clear(
    target: Target,
    scope: Scope,
    all_map_indices: bool,
    try_number: int | None,
    actor: str = ACTOR,
) -> None:
    if isinstance(target, Store):
        accessor = local_accessor(target, scope, try_number, actor)
    else:
        accessor = remote_accessor(target, scope, try_number)
    if isinstance(scope, TaskScope):
        await accessor.clear(all_map_indices)
    else:
        await accessor.clear()


async def compact(target: Target, dry_run: bool) -> dict[str, Any]:
    """tasktrail's compaction (or its dry run): the report, as JSON fields."""
    if isinstance(target, Store):
        report = await target.compact(dry_run=dry_run)
        answer: dict[str, Any] = msgspec.to_builtins(report)
        return answer
    query = {"dry_run": "true"} if dry_run else {}
    _, content = await target.request("POST", "/api/v1/compact", query=query, body=b"")
    answer = json.loads(content)
    return dict(answer)


def log_report(report: dict[str, Any]) -> None:
    import logging

    what = "would remove" if report.get("dry_run") else "removed"
    logging.getLogger("tasktrail.airflow").info(
        "tasktrail compaction %s %s expired keys and %s events",
        what,
        report.get("keys_expired"),
        report.get("events_removed"),
    )
