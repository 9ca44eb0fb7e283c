"""The key/value routes of a task's or an asset's store: get, set, patch, delete, list, clear,
set many, erase."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import anyio.lowlevel
import msgspec
from msgspec import UNSET, UnsetType
from starlette.responses import Response

from eventstore.log.config import NEVER_EXPIRE, NeverExpire
from eventstore.log.envelope import is_sensitive
from eventstore.log.errors import ConcurrencyError
from eventstore.log.events import from_micros
from eventstore.log.scopes import TaskScope
from eventstore.service.auth import Action, sees_sensitive
from eventstore.service.errors import HTTPProblem
from eventstore.service.models import (
    MAX_RETENTION_SECONDS,
    AssetBatchBody,
    AssetPutBody,
    BatchBody,
    KeyEntry,
    KeyList,
    PatchBody,
    PutBody,
    TaskBatchBody,
    TaskPutBody,
    WriteResult,
)
from eventstore.service.operation import (
    MAX_LIST_LIMIT,
    Call,
    Handler,
    Operation,
    Param,
    ScopeKind,
    unknown_scope,
)
from eventstore.service.params import (
    AUTH_STATUSES,
    IDEMPOTENCY,
    IF_MATCH,
    KEY,
    SCOPE_KINDS,
    TRY,
    WRITE_STATUSES,
    prefix_of,
    scope_params,
    suffix_of,
)
from eventstore.service.responses import json_response, versioned_response
from eventstore.store import AppendResult, AssetStore, CurrentRow, TaskStore

__all__ = ["STORE_OPERATIONS"]


def _write_response(call: Call, result: AppendResult) -> Response:
    kind = "task" if isinstance(call.scope, TaskScope) else "asset"
    call.state.metrics.append(kind, "ok", result.events)
    body = WriteResult(
        version=result.version,
        seq=result.seq,
        events=result.events,
        recorded_at=result.recorded_at,
    )
    return versioned_response(body, result.version)


def _entry(call: Call, row: CurrentRow) -> KeyEntry | None:
    """The entry of a projection row as the bearer may see it; None if it was erased."""
    scope = call.the_scope()
    sensitive = is_sensitive(row.value)
    if sensitive and not sees_sensitive(call.claims, scope):
        value: msgspec.Raw | None = msgspec.Raw(b"null")
    else:
        encoded = call.store.open_json(scope, row)
        value = None if encoded is None else msgspec.Raw(encoded)
    if value is None:
        return None
    return KeyEntry(
        key=row.key,
        value=value,
        updated_at=from_micros(row.updated_at),
        expires_at=None if row.expires_at is None else from_micros(row.expires_at),
        sensitive=sensitive,
    )


def _retention(value: str | float) -> timedelta | NeverExpire | None:
    if value == "default":
        return None
    if value == "never":
        return NEVER_EXPIRE
    assert isinstance(value, float)
    if not (math.isfinite(value) and 1e-6 <= value <= MAX_RETENTION_SECONDS):
        raise HTTPProblem(
            422,
            "bad_retention",
            f"retention must be a number of seconds from 1e-6 to {MAX_RETENTION_SECONDS:.0f} "
            f'(100 years), got {value}; use "never" for values kept until deleted',
        )
    return timedelta(seconds=value)


async def _not_found(call: Call, key: str) -> HTTPProblem:
    scope = call.the_scope()
    if await call.store.scope_id(scope) is None:
        return unknown_scope(scope)
    return HTTPProblem(404, "unknown_key", f"{scope} has no live key {key!r}")


# ----------------------------------------------------------------------------- handlers


async def get_key(call: Call) -> Response:
    key = call.key()
    row = await call.store.read(call.the_scope(), key)
    entry = None if row is None else _entry(call, row)
    if entry is None:
        raise await _not_found(call, key)
    return json_response(entry)


def _stamps(
    expected_version: int | None, idempotency_id: str | None, sensitive: bool | UnsetType
) -> dict[str, Any]:
    """What every write of a request carries besides its values, as the accessors take it.

    A body's `sensitive` is said (True, False) or not (None: the key keeps its flag)."""
    return {
        "expected_version": expected_version,
        "idempotency_id": idempotency_id,
        "sensitive": None if sensitive is UNSET else bool(sensitive),
    }


def _expiry(body: PutBody | BatchBody) -> dict[str, Any]:
    """A task write's retention or expires_at (neither: the store's default retention)."""
    expires_at = None if body.expires_at is UNSET else body.expires_at
    if body.retention is UNSET:
        return {"retention": None, "expires_at": expires_at}
    if expires_at is not None:
        raise HTTPProblem(422, "bad_retention", "pass retention or expires_at, not both")
    return {"retention": _retention(body.retention), "expires_at": None}


async def _write_body(
    call: Call,
    task_kind: type[PutBody | BatchBody],
    asset_kind: type[AssetPutBody | AssetBatchBody],
) -> tuple[TaskStore | AssetStore, Any, dict[str, Any]]:
    """A set's accessor, its body, and what the accessor takes beside the values: the expiry
    (a task's; asset entries never expire) and the stamps."""
    accessor = call.accessor()
    expected, idempotency = call.expected_version(), call.idempotency_id()
    if isinstance(accessor, TaskStore):
        body: Any = await call.body(task_kind)
        options = _stamps(expected, idempotency, body.sensitive)
        options.update(_expiry(body))
    else:
        body = await call.body(asset_kind)
        options = _stamps(expected, idempotency, body.sensitive)
    return accessor, body, options


async def put_key(call: Call) -> Response:
    key = call.key()
    accessor, body, options = await _write_body(call, PutBody, AssetPutBody)
    return _write_response(call, await accessor.set(key, body.value, **options))


async def patch_key(call: Call) -> Response:
    """Set a new value under the key's current expiry.

    The expiry is read, then the write is made with the version the read saw, so a write in
    between (which might have changed the expiry) makes this one retry with the new expiry
    instead of overwriting it with a stale one.
    """
    key = call.key()
    body: PatchBody = await call.body(PatchBody)
    accessor = call.accessor()
    scope = call.the_scope()
    expected, idempotency = call.expected_version(), call.idempotency_id()
    for _ in range(8):
        version = await call.store.version(scope)
        row = await call.store.read(scope, key)
        if row is None:
            raise await _not_found(call, key)
        expiry: dict[str, Any] = {}
        if isinstance(accessor, TaskStore):
            expiry["retention"] = NEVER_EXPIRE if row.expires_at is None else None
            expiry["expires_at"] = None if row.expires_at is None else from_micros(row.expires_at)
        stamps = _stamps(version if expected is None else expected, idempotency, body.sensitive)
        try:
            result = await accessor.set(key, body.value, **expiry, **stamps)
        except ConcurrencyError:
            if expected is not None:
                raise
            continue
        return _write_response(call, result)
    raise HTTPProblem(
        503, "busy", f"{scope} changed under every attempt to patch {key!r}; try again"
    )


async def delete_key(call: Call) -> Response:
    result = await call.accessor().delete(
        call.key(), expected_version=call.expected_version(), idempotency_id=call.idempotency_id()
    )
    return _write_response(call, result)


async def list_keys(call: Call) -> Response:
    limit = call.query_int("limit", 100, 0, MAX_LIST_LIMIT)
    assert limit is not None
    after = call.request.query_params.get("after")
    scope = call.the_scope()
    # The version first: if a write lands between the two reads, the version is the older one
    # and a write conditioned on it fails rather than succeeding on a view it did not see.
    version = await call.store.version(scope)
    # By keyset: the rows after `after`, one more than the page to know whether there is a next.
    rows = await call.store.read_page(scope, after=after, limit=limit + 1) if limit else []
    page = rows[:limit]
    more = len(rows) > limit and bool(page)
    entries = []
    for i, row in enumerate(page, 1):
        entries.append(_entry(call, row))
        if i % 250 == 0:  # a long page is made in slices: the event loop turns between them
            await anyio.lowlevel.checkpoint()
            await call.store.ready(scope, page[i:])  # keys a refresh meanwhile dropped
    body = KeyList(
        items=[e for e in entries if e is not None],
        next=page[-1].key if more else None,
        version=version,
    )
    return versioned_response(body, version)


async def clear_scope(call: Call) -> Response:
    accessor = call.accessor()
    expected, idempotency = call.expected_version(), call.idempotency_id()
    if isinstance(accessor, TaskStore):
        result = await accessor.clear(
            call.query_bool("all_map_indices"),
            expected_version=expected,
            idempotency_id=idempotency,
        )
    else:
        result = await accessor.clear(expected_version=expected, idempotency_id=idempotency)
    return _write_response(call, result)


async def set_batch(call: Call) -> Response:
    accessor, body, options = await _write_body(call, BatchBody, AssetBatchBody)
    return _write_response(call, await accessor.set_many(body.values, **options))


async def erase_scope(call: Call) -> Response:
    """Crypto-shredding: destroy the scope's data keys and its values; admins only."""
    scope = call.the_scope()
    if await call.store.scope_id(scope) is None:
        raise unknown_scope(scope)
    return _write_response(call, await call.store.erase(scope))


def _store_operations(kind: ScopeKind) -> list[Operation]:
    prefix, scope = prefix_of(kind), scope_params(kind)
    what = "task instance" if kind == "task" else "asset"
    tag = "task store" if kind == "task" else "asset store"
    suffix = suffix_of(kind)
    store, item, batch = f"{prefix}/store", f"{prefix}/store/{{key:path}}", f"{prefix}/store:batch"
    write_params: tuple[Param, ...] = (IF_MATCH, IDEMPOTENCY, TRY)
    clear_params = write_params
    if kind == "task":
        clear_params = (
            Param(
                "all_map_indices",
                "query",
                {"type": "boolean"},
                "clear every map index of the task in one atomic step",
            ),
            *write_params,
        )

    def op(
        method: str,
        path: str,
        name: str,
        summary: str,
        handler: Handler,
        action: Action,
        params: tuple[Param, ...],
        statuses: tuple[int, ...],
        body: type | None = None,
    ) -> Operation:
        return Operation(
            method,
            path,
            f"{name}_{suffix}",
            summary,
            handler,
            tag,
            action=action,
            scope=kind,
            body=body,
            response=KeyList if name == "list" else KeyEntry if name == "get" else WriteResult,
            params=params,
            statuses=statuses,
        )

    page_params = (
        Param(
            "limit",
            "query",
            {"type": "integer", "minimum": 0, "maximum": MAX_LIST_LIMIT},
            "most keys on a page (default 100; 0 answers only the version)",
        ),
        Param("after", "query", {"type": "string"}, "the `next` of the previous page"),
    )
    # TaskPutBody and TaskBatchBody are annotated with what their schemas add (retention or
    # expires_at).
    put_body: Any = TaskPutBody if kind == "task" else AssetPutBody
    batch_body: Any = TaskBatchBody if kind == "task" else AssetBatchBody
    one = (*scope, KEY)
    return [
        op(
            "GET",
            store,
            "list",
            f"List the live keys of the {what}, ordered by key",
            list_keys,
            "read",
            (*scope, *page_params),
            AUTH_STATUSES,
        ),
        op(
            "DELETE",
            store,
            "clear",
            f"Remove every key of the {what}",
            clear_scope,
            "clear",
            (*scope, *clear_params),
            WRITE_STATUSES,
        ),
        op(
            "POST",
            batch,
            "set_many",
            f"Set several keys of the {what} in one atomic step",
            set_batch,
            "write",
            (*scope, *write_params),
            WRITE_STATUSES,
            batch_body,
        ),
        op(
            "POST",
            f"{prefix}/store:erase",
            "erase",
            f"Erase the {what} (admins): destroy its data keys and its values at once; its "
            "history keeps the metadata, every earlier value reads as erased",
            erase_scope,
            "erase",
            scope,
            AUTH_STATUSES,
        ),
        op("GET", item, "get", "Read one key", get_key, "read", one, AUTH_STATUSES),
        op(
            "PUT",
            item,
            "set",
            "Set one key",
            put_key,
            "write",
            (*one, *write_params),
            WRITE_STATUSES,
            put_body,
        ),
        op(
            "PATCH",
            item,
            "patch",
            "Change a key's value and keep its expiry",
            patch_key,
            "write",
            (*one, *write_params),
            WRITE_STATUSES,
            PatchBody,
        ),
        op(
            "DELETE",
            item,
            "delete",
            "Delete one key; deleting an absent key changes nothing",
            delete_key,
            "delete",
            (*one, *write_params),
            WRITE_STATUSES,
        ),
    ]


STORE_OPERATIONS: list[Operation] = [
    operation for kind in SCOPE_KINDS for operation in _store_operations(kind)
]
