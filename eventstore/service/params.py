"""The parameters the API's operations share, as OpenAPI describes them, and their path prefixes."""

from __future__ import annotations

from typing import Any, Final

from eventstore.service.operation import MAX_MAP_INDEX, Param, ScopeKind

__all__ = [
    "ASSET_NAME_PREFIX",
    "ASSET_URI_PREFIX",
    "AUTH_STATUSES",
    "IDEMPOTENCY",
    "IF_MATCH",
    "KEY",
    "NAME_PARAMS",
    "SCOPE_KINDS",
    "TASK_PARAMS",
    "TASK_PREFIX",
    "TRY",
    "URI_PARAMS",
    "WRITE_STATUSES",
    "prefix_of",
    "scope_params",
    "str_schema",
    "suffix_of",
]


def str_schema(**extra: Any) -> dict[str, Any]:
    return {"type": "string", "minLength": 1, **extra}


TASK_PARAMS: Final = (
    Param("dag_id", "path", str_schema(), "the DAG id (escaped: / as %2F)", True),
    Param("run_id", "path", str_schema(), "the run id (escaped: / as %2F)", True),
    Param("task_id", "path", str_schema(), "the task id (escaped: / as %2F)", True),
    Param(
        "map_index",
        "path",
        {"type": "integer", "minimum": -1, "maximum": MAX_MAP_INDEX},
        "the map index, -1 for an unmapped task",
        True,
    ),
)
NAME_PARAMS: Final = (
    Param("name", "path", str_schema(), "the asset's name (escaped: / as %2F)", True),
    Param("uri", "query", str_schema(), "the asset's uri, when it has both a name and a uri"),
)
URI_PARAMS: Final = (Param("uri", "query", str_schema(), "the asset's uri", True),)
KEY: Final = Param(
    "key", "path", str_schema(maxLength=512), "the key; a / in it is sent as %2F", True
)
IF_MATCH: Final = Param(
    "If-Match",
    "header",
    {"type": "string", "pattern": '^"?[0-9]{1,18}"?$'},
    'write only if the scope is at this version (e.g. "7"), else 409',
)
TRY: Final = Param(
    "Tasktrail-Try",
    "header",
    {"type": "string", "pattern": "^[0-9]{1,9}$"},
    "the try the caller runs; with a task token for another try the write is refused (403); "
    "an admin token's write is stamped with this try",
)
IDEMPOTENCY: Final = Param(
    "Idempotency-Key",
    "header",
    {"type": "string", "minLength": 1, "maxLength": 200},
    "a retried write with the same key returns the first result and appends nothing",
)

AUTH_STATUSES: Final = (401, 403, 404, 422)
WRITE_STATUSES: Final = (*AUTH_STATUSES, 409, 410, 413, 503)


def scope_params(kind: ScopeKind) -> tuple[Param, ...]:
    return {"task": TASK_PARAMS, "asset_name": NAME_PARAMS, "asset_uri": URI_PARAMS}[kind]


def suffix_of(kind: ScopeKind) -> str:
    return {"task": "task", "asset_name": "asset_by_name", "asset_uri": "asset_by_uri"}[kind]


TASK_PREFIX: Final = "/api/v1/tasks/{dag_id}/{run_id}/{task_id}/{map_index:mapindex}"
ASSET_NAME_PREFIX: Final = "/api/v1/assets/by-name/{name}"
ASSET_URI_PREFIX: Final = "/api/v1/assets/by-uri"
# Every resource is served for each kind of scope, under its prefix.
SCOPE_KINDS: Final[tuple[ScopeKind, ...]] = ("task", "asset_name", "asset_uri")


def prefix_of(kind: ScopeKind) -> str:
    return {"task": TASK_PREFIX, "asset_name": ASSET_NAME_PREFIX, "asset_uri": ASSET_URI_PREFIX}[
        kind
    ]
