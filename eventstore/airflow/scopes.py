"""Airflow's scopes, values and writers as tasktrail's."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, NamedTuple

from eventstore.log.scopes import AssetScope, Scope, TaskScope
from eventstore.log.values import check_key

__all__ = ["Writer", "asset_id_of", "asset_writer", "aware", "decode", "is_task", "tasktrail_scope"]


class Writer(NamedTuple):
    """Who a write comes from: the event's actor, and the writer fields of an asset's row."""

    actor: str
    kind: str | None = None  # Airflow's AssetStateStoreWriterKind value
    dag_id: str | None = None
    run_id: str | None = None
    task_id: str | None = None
    map_index: int | None = None


def asset_writer(
    kind: Any,
    dag_id: str | None,
    run_id: str | None,
    task_id: str | None,
    map_index: int | None,
) -> Writer:
    """The actor of an asset write: the task instance that wrote it, the watcher, or the API.

    Checked first as Airflow checks it: the fields `kind` needs, and no others."""
    kind.validate_writer_fields(dag_id, run_id, task_id, map_index)
    value = getattr(kind, "value", kind)
    if value == "task":
        actor = f"task:{dag_id}/{run_id}/{task_id}"
        if map_index is not None and map_index != -1:
            actor += f"[{map_index}]"
    elif value == "watcher":
        actor = "watcher"
    else:
        actor = "api:airflow"
    return Writer(actor, value, dag_id, run_id, task_id, map_index)


def asset_id_of(scope: object) -> int | None:
    """The asset id of a server-side asset scope, else None."""
    if is_task(scope):
        return None
    asset_id = getattr(scope, "asset_id", None)
    if asset_id is not None and (type(asset_id) is not int or asset_id < 0):
        raise TypeError(f"an asset scope's asset_id must be an int, got {asset_id!r}")
    return asset_id


def is_task(scope: object) -> bool:
    return all(hasattr(scope, f) for f in ("dag_id", "run_id", "task_id"))


def tasktrail_scope(scope: object) -> Scope:
    """Airflow's scope (core or SDK copy, recognised by its fields) as tasktrail's."""
    if is_task(scope):
        map_index = getattr(scope, "map_index", -1)
        return TaskScope(
            scope.dag_id,  # type: ignore[attr-defined]
            scope.run_id,  # type: ignore[attr-defined]
            scope.task_id,  # type: ignore[attr-defined]
            -1 if map_index is None else map_index,
        )
    name = getattr(scope, "name", None)
    uri = getattr(scope, "uri", None)
    if name is None and uri is None:
        raise TypeError(
            f"not an Airflow task or asset scope: {scope!r}; a task scope has dag_id, run_id, "
            "task_id and map_index, an asset scope asset_id, name or uri"
        )
    return AssetScope(name, uri)


def decode(key: str, value: str) -> Any:
    """The JSON value of Airflow's JSON text.

    Airflow makes the text with `json.dumps`, and `get` gives back `json.dumps` of the stored
    value: the same text, byte for byte. Other spellings of the same JSON come back in that form.
    """
    check_key(key)
    if not isinstance(value, str):
        raise TypeError(
            f"Airflow passes values as JSON text; got {type(value).__name__} for key {key!r}"
        )
    try:
        return json.loads(value)
    except json.JSONDecodeError as e:
        raise ValueError(f"the value of key {key!r} is not JSON text: {e}") from e


def aware(expires_at: datetime | None) -> datetime | None:
    if expires_at is not None and expires_at.tzinfo is None:
        # Airflow computes expiry in UTC on the worker.
        return expires_at.replace(tzinfo=UTC)
    return expires_at
