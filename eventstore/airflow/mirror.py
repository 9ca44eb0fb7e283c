"""The mirror checked against the projection (`python -m eventstore.airflow mirror`), and put
right: rows missing, rows that differ, rows of no live key."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec

from eventstore.airflow.operations import Target
from eventstore.airflow.place import Place, dag_run_query
from eventstore.airflow.scopes import Writer, aware
from eventstore.airflow.settings import ACTOR
from eventstore.log.envelope import ERASED
from eventstore.log.errors import ConfigError
from eventstore.log.events import from_micros, to_micros
from eventstore.log.scopes import AssetScope, Scope, TaskScope, scope_key
from eventstore.store import Store

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from eventstore.airflow.backend import TasktrailBackend

__all__ = [
    "MirrorReport",
    "compare_mirror",
    "current_rows",
    "expired_keys",
    "projection_rows",
]


def _expired(expires_at: int | None, now: int) -> bool:
    return expires_at is not None and expires_at <= now


async def expired_keys(target: Target) -> list[tuple[str, str, str, int, str]]:
    """(dag_id, run_id, task_id, map_index, key) of every task key whose expiry has passed."""
    if not isinstance(target, Store):
        return []  # the service's compaction report counts them; it does not list them
    now = to_micros(target.now())
    return sorted(
        (scope.dag_id, scope.run_id, scope.task_id, scope.map_index, row.key)
        for scope, row in await target.every_current()
        if _expired(row.expires_at, now) and isinstance(scope, TaskScope)
    )


class _Current(NamedTuple):
    """A live key of the projection, as the mirror should show it."""

    value: Any
    sensitive: bool
    expires_at: datetime | None
    updated_at: datetime


async def projection_rows(
    target: Target,
) -> tuple[dict[Scope, dict[str, _Current]], frozenset[str]]:
    """Every live key of the projection, by scope, and the scope keys of every scope the log
    ever had a write for (embedded stores only)."""
    if not isinstance(target, Store):
        raise ConfigError(
            "checking the mirror reads tasktrail's projection directly: run it where the "
            "database is (TASKTRAIL_DB), not through a service"
        )
    known = frozenset(scope_key(scope) for scope in await target.written_scopes())
    return _current(target, await target.every_current()), known


async def current_rows(store: Store, scopes: list[Scope]) -> dict[Scope, dict[str, _Current]]:
    """The live keys of the projection in the given scopes, as `projection_rows` gives them."""
    rows = [(scope, row) for scope in scopes for row in await store.read_all(scope)]
    return _current(store, rows)


def _current(store: Store, rows: list[tuple[Scope, Any]]) -> dict[Scope, dict[str, _Current]]:
    from eventstore.log.envelope import is_sensitive

    now = to_micros(store.now())
    found: dict[Scope, dict[str, _Current]] = {}
    for scope, row in rows:
        if _expired(row.expires_at, now):
            continue
        value = store.open_value(scope, row)
        if value is ERASED:
            continue
        found.setdefault(scope, {})[row.key] = _Current(
            value,
            is_sensitive(row.value) or store.vault.encrypting,
            None if row.expires_at is None else from_micros(row.expires_at),
            from_micros(row.updated_at),
        )
    return found


class MirrorReport(msgspec.Struct, kw_only=True):
    """How Airflow's tables differ from the projection (before a repair, if one ran)."""

    rows_checked: int = 0
    missing: list[str] = msgspec.field(default_factory=list)  # rows the mirror lacks
    stale: list[str] = msgspec.field(default_factory=list)  # rows with another value or expiry
    extra: list[str] = msgspec.field(default_factory=list)  # rows of no live key
    repaired: bool = False

    @property
    def ok(self) -> bool:
        return not (self.missing or self.stale or self.extra)


def compare_mirror(
    backend: TasktrailBackend,
    session: Session,
    projection: dict[Scope, dict[str, _Current]],
    repair: bool,
    remove_only: bool = False,
    known: frozenset[str] = frozenset(),
    only: frozenset[str] | None = None,
) -> MirrorReport:
    """How Airflow's tables differ from `projection`; with `repair`, put them right. `only`:
    the scope keys to compare (the catch-up's), every scope if None."""
    from airflow.models.asset import AssetModel
    from airflow.models.asset_state_store import AssetStateStoreModel
    from airflow.models.task_state_store import TaskStateStoreModel
    from sqlalchemy import select

    report = MirrorReport(repaired=repair)
    assets = {
        AssetScope(name or None, uri or None): asset_id
        for asset_id, name, uri in session.execute(
            select(AssetModel.id, AssetModel.name, AssetModel.uri)
        )
    }
    by_name = {s.name: i for s, i in assets.items() if s.name is not None}
    by_uri = {s.uri: i for s, i in assets.items() if s.uri is not None}
    # What the mirror should hold, by (table, place, key).
    wanted: dict[tuple[Any, ...], tuple[str, datetime | None, Scope]] = {}
    for scope, keys in projection.items():
        for key, current in keys.items():
            text = backend._mirrored(current.value, current.sensitive)
            if text is None:
                continue
            if isinstance(scope, TaskScope):
                place: tuple[Any, ...] = (
                    "task",
                    scope.dag_id,
                    scope.run_id,
                    scope.task_id,
                    scope.map_index,
                    key,
                )
            else:
                asset_id = assets.get(scope)
                if asset_id is None:
                    if scope.uri is None:
                        asset_id = by_name.get(scope.name or "")
                    else:
                        asset_id = by_uri.get(scope.uri)
                if asset_id is None:
                    continue  # an asset Airflow does not know: nothing to mirror into
                place = ("asset", asset_id, key)
            wanted[place] = (text, current.expires_at, scope)
    have: dict[tuple[Any, ...], tuple[str, datetime | None]] = {}
    t = TaskStateStoreModel
    for row in session.execute(
        select(t.dag_id, t.run_id, t.task_id, t.map_index, t.key, t.value, t.expires_at)
    ):
        have[("task", row[0], row[1], row[2], row[3], row[4])] = (row[5], aware(row[6]))
    a = AssetStateStoreModel
    for row in session.execute(select(a.asset_id, a.key, a.value)):
        have[("asset", row[0], row[1])] = (row[2], None)
    ids = {asset_id: scope for scope, asset_id in assets.items()}
    if only is not None:
        have = {p: row for p, row in have.items() if _scope_of_place(p, ids) in only}
    report.rows_checked = len(have)
    now = datetime.now(UTC)
    for place, (text, expires_at, scope) in wanted.items():
        found = have.get(place)
        if found is None:
            report.missing.append(_place_text(place))
        elif found[0] != text or found[1] != expires_at:
            report.stale.append(_place_text(place))
        else:
            continue
        if repair and not remove_only:
            _repair_row(session, place, text, expires_at, scope)
    for place, (_, expires_at) in have.items():
        if place in wanted or (expires_at is not None and expires_at <= now):
            continue  # an expired row is `cleanup()`'s to remove
        report.extra.append(_place_text(place))
        if remove_only and _scope_of_place(place, ids) not in known:
            # A scope tasktrail never had: Airflow held the row before tasktrail was its
            # backend. Only an explicit repair removes it.
            continue
        if repair:
            Place(*_place_of(place)).delete(session, place[-1])
    return report


def _scope_of_place(place: tuple[Any, ...], assets: dict[int, AssetScope]) -> str | None:
    if place[0] == "task":
        return scope_key(TaskScope(place[1], place[2], place[3], place[4]))
    asset = assets.get(place[1])
    return None if asset is None else scope_key(asset)


def _place_text(place: tuple[Any, ...]) -> str:
    if place[0] == "task":
        return f"task {place[1]}/{place[2]}/{place[3]}[{place[4]}] key {place[5]!r}"
    return f"asset id {place[1]} key {place[2]!r}"


def _place_of(place: tuple[Any, ...]) -> tuple[TaskScope | None, int | None, int | None]:
    if place[0] == "task":
        return TaskScope(place[1], place[2], place[3], place[4]), None, None
    return None, None, place[1]


def _repair_row(
    session: Session,
    place: tuple[Any, ...],
    text: str,
    expires_at: datetime | None,
    scope: Scope,
) -> None:
    task, _, asset_id = _place_of(place)
    if task is not None:
        run_id = session.scalar(dag_run_query(task))
        if run_id is None:
            return  # the DagRun is gone from Airflow: nothing to mirror into
        Place(task, run_id, None).upsert(session, place[-1], text, Writer(ACTOR), expires_at)
    else:
        Place(None, None, asset_id).upsert(
            session, place[-1], text, Writer(ACTOR, "api"), expires_at
        )
