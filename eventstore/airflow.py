"""tasktrail as Apache Airflow's task state store backend.

    AIRFLOW__STATE_STORE__BACKEND=eventstore.airflow.TasktrailBackend
    TASKTRAIL_DB=sqlite:////path/to/trail.db     # default: $AIRFLOW_HOME/tasktrail.db
    # or, through a tasktrail service (`tasktrail serve`), with an admin token:
    TASKTRAIL_URL=http://tasktrail.internal:8750
    TASKTRAIL_TOKEN=eyJhbGci...                 # tasktrail token --role admin --name airflow

Airflow (3.3) keeps calling `context["task_state_store"]` in tasks; its execution API hands each
call to this class, which appends it to tasktrail's log. What Airflow gives the backend, and what
this class makes of it:

- Scopes: Airflow's `TaskScope(dag_id, run_id, task_id, map_index)` becomes tasktrail's
  `TaskScope`; an `AssetScope` with an integer `asset_id` (on the server) is looked up in
  Airflow's database through `session` and becomes `AssetScope(name, uri)`. The core and SDK
  copies of Airflow's scope classes are different classes, so they are recognised by their fields.
- The try: not passed by Airflow; looked up through `session` as the task instance's current
  `try_number`, and stamped on every write of a task scope (attempt fencing applies). A clear of
  every map index comes from the UI or CLI, not a try, and is not stamped.
- Values arrive as JSON text made by `json.dumps`; they are stored as JSON values (so tasktrail's
  history, diff and value rules see real values), and `get` gives back `json.dumps` of the value,
  which is the same text Airflow sent.
- Expiry arrives as an absolute UTC datetime (kept exactly) or None (never expires).
- Airflow retries a failed call up to 5 times, so every call is safe to repeat: a delete of an
  absent key and a clear of an empty scope append nothing, and a set identical to the scope's newest
  event (same key, value, expiry and try) is taken as a repeat and appends nothing.
- Through a service, one admin token serves every task instance: each write names its try
  (`Tasktrail-Try`), which the service stamps on an admin's write and fences as it would a task's.
  Writes are recorded with the actor `api:<the token's name>`. The client retries a lost answer
  with the same idempotency id; the repeat rule above covers Airflow's own retries.

The sync methods (the only ones Airflow 3.3 calls) run on one event loop per process, in a
background thread started at the first call and stopped at exit. The async methods are native:
each opens the store (or connects to the service) on the caller's event loop for the call.

Importing `eventstore` never imports this module, nor Airflow.
"""

from __future__ import annotations

import atexit
import base64
import json
import os
import threading
from collections.abc import Awaitable, Callable, Hashable
from concurrent.futures import Future
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, TypeAlias, TypeVar

import anyio
from anyio.from_thread import BlockingPortal

from eventstore.backends.base import EventFilter
from eventstore.config import NEVER_EXPIRE, StoreConfig
from eventstore.crypto import ERASED
from eventstore.errors import ConfigError
from eventstore.events import to_micros
from eventstore.scopes import AssetScope, Scope, TaskScope
from eventstore.store import Store, open_store
from eventstore.values import check_key, decode_value, encode_value

try:
    from airflow.state import BaseStoreBackend
except ImportError as e:
    raise ImportError(
        "eventstore.airflow needs Apache Airflow 3.3: pip install 'tasktrail[airflow]'"
    ) from e

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import Session

    from eventstore.client import Remote, RemoteAssetStore, RemoteTaskStore

    # Where the backend writes: an open store (embedded) or a connection to a service (remote).
    Target: TypeAlias = Store | Remote

__all__ = ["ACTOR", "TasktrailBackend", "store_config"]

ACTOR: Final = "airflow"

T = TypeVar("T")


def store_config() -> StoreConfig:
    """The store settings the backend uses.

    Airflow lets oversized values through with a warning (`[state_store] max_value_storage_bytes`
    only bounds its public REST API), so the backend sets no size limit of its own.
    """
    return StoreConfig(max_value_bytes=0)


class TasktrailBackend(BaseStoreBackend):
    """Airflow's `[state_store] backend`, writing to tasktrail's event log."""

    def __init__(self, url: str | None = None, *, token: str | None = None) -> None:
        """Airflow makes the backend with no arguments: the environment names the store.

        Tests may name it: a database URL (embedded), or a service's http(s) URL with a token.
        """
        if url is None:
            url, token = _configured()
        self.url = url
        self.config = store_config()
        self.token: str | None = None
        if _is_service(url):
            self.token = token or os.environ.get("TASKTRAIL_TOKEN") or None
            _check_token(self.token)
        self._key = (url, self.config, self.token)
        self._assets: dict[int, AssetScope] = {}

    def __repr__(self) -> str:
        return f"<TasktrailBackend {self.url}>"

    def _open(self) -> AbstractAsyncContextManager[Target]:
        """The store, or a connection to the service, for a block on the current event loop."""
        if self.token is None:
            return open_store(self.url, self.config)
        from eventstore.client import connect

        return connect(self.url, token=self.token)

    def _call(self, operation: Callable[..., Awaitable[T]], *args: Any) -> T:
        return _BRIDGE.call(self._key, self._open, operation, *args)

    # -- sync: what Airflow 3.3 calls, from a thread without an event loop --------------------

    def get(self, scope: Any, key: str, *, session: Session | None = None) -> str | None:
        target = self._scope(scope, session)
        return self._call(_get, target, key)

    def set(
        self,
        scope: Any,
        key: str,
        value: str,
        *,
        expires_at: datetime | None = None,
        session: Session | None = None,
    ) -> None:
        target = self._scope(scope, session)
        try_number = _try_number(target, session)
        decoded = _decode(key, value)
        self._call(_set, target, key, decoded, _aware(expires_at), try_number)

    def delete(self, scope: Any, key: str, *, session: Session | None = None) -> None:
        target = self._scope(scope, session)
        self._call(_delete, target, key, _try_number(target, session))

    def clear(
        self, scope: Any, *, all_map_indices: bool = False, session: Session | None = None
    ) -> None:
        target = self._scope(scope, session)
        try_number = None if all_map_indices else _try_number(target, session)
        self._call(_clear, target, all_map_indices, try_number)

    # -- async: native, on the caller's event loop ----------------------------------------------

    async def aget(
        self, scope: Any, key: str, *, session: AsyncSession | None = None
    ) -> str | None:
        target = await self._ascope(scope, session)
        async with self._open() as opened:
            return await _get(opened, target, key)

    async def aset(
        self,
        scope: Any,
        key: str,
        value: str,
        *,
        expires_at: datetime | None = None,
        session: AsyncSession | None = None,
    ) -> None:
        target = await self._ascope(scope, session)
        try_number = await _atry_number(target, session)
        decoded = _decode(key, value)
        async with self._open() as opened:
            await _set(opened, target, key, decoded, _aware(expires_at), try_number)

    async def adelete(self, scope: Any, key: str, *, session: AsyncSession | None = None) -> None:
        target = await self._ascope(scope, session)
        try_number = await _atry_number(target, session)
        async with self._open() as opened:
            await _delete(opened, target, key, try_number)

    async def aclear(
        self, scope: Any, *, all_map_indices: bool = False, session: AsyncSession | None = None
    ) -> None:
        target = await self._ascope(scope, session)
        try_number = None if all_map_indices else await _atry_number(target, session)
        async with self._open() as opened:
            await _clear(opened, target, all_map_indices, try_number)

    # -- scopes ---------------------------------------------------------------------------------

    def _scope(self, scope: object, session: Session | None) -> Scope:
        asset_id = _asset_id(scope)
        if asset_id is None:
            return _tasktrail_scope(scope)
        known = self._assets.get(asset_id)
        if known is None:
            if session is None:
                raise _no_session(asset_id)
            from airflow.models.asset import AssetModel
            from sqlalchemy import select

            found = session.execute(
                select(AssetModel.name, AssetModel.uri).where(AssetModel.id == asset_id)
            ).one_or_none()
            known = self._remember(asset_id, found)
        return known

    async def _ascope(self, scope: object, session: AsyncSession | None) -> Scope:
        asset_id = _asset_id(scope)
        if asset_id is None:
            return _tasktrail_scope(scope)
        known = self._assets.get(asset_id)
        if known is None:
            if session is None:
                raise _no_session(asset_id)
            from airflow.models.asset import AssetModel
            from sqlalchemy import select

            result = await session.execute(
                select(AssetModel.name, AssetModel.uri).where(AssetModel.id == asset_id)
            )
            known = self._remember(asset_id, result.one_or_none())
        return known

    def _remember(self, asset_id: int, found: Any) -> AssetScope:
        if found is None:
            raise LookupError(f"Airflow has no asset with id {asset_id}")
        # An asset's name and uri never change under one id.
        scope = self._assets[asset_id] = AssetScope(found[0] or None, found[1] or None)
        return scope


def _configured() -> tuple[str, str | None]:
    """The store the environment names: TASKTRAIL_URL and TASKTRAIL_TOKEN, or TASKTRAIL_DB."""
    service = os.environ.get("TASKTRAIL_URL")
    database = os.environ.get("TASKTRAIL_DB")
    if service and database:
        raise ConfigError(
            "both TASKTRAIL_URL (a tasktrail service) and TASKTRAIL_DB (a database) are set; "
            "unset one of them"
        )
    if service:
        if not _is_service(service):
            raise ConfigError(
                f"TASKTRAIL_URL must be the service's http:// or https:// URL, got {service!r}; "
                "a database URL goes in TASKTRAIL_DB"
            )
        return service, os.environ.get("TASKTRAIL_TOKEN")
    return database or _default_url(), None


def _is_service(url: str) -> bool:
    return url.startswith(("http://", "https://"))


def _check_token(token: str | None) -> None:
    """Refuse a missing token, or one whose role cannot write for every task instance.

    The role is read from the token's payload, unverified: the service checks the signature.
    """
    if not token:
        raise ConfigError(
            "TASKTRAIL_URL is set but TASKTRAIL_TOKEN is not; make an admin token on the "
            "service's host: tasktrail token --role admin --name airflow --ttl 365d"
        )
    try:
        payload = token.split(".")[1]
        role = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["role"]
    except (IndexError, ValueError, KeyError, TypeError):
        return  # not readable here: the service answers 401 and says why
    if role != "admin":
        raise ConfigError(
            f"TASKTRAIL_TOKEN is a {role} token; Airflow writes for every task instance and "
            "needs an admin token: tasktrail token --role admin --name airflow --ttl 365d"
        )


def _default_url() -> str:
    from airflow.configuration import AIRFLOW_HOME

    return f"sqlite:///{os.path.join(AIRFLOW_HOME, 'tasktrail.db')}"


def _asset_id(scope: object) -> int | None:
    """The asset id of a server-side asset scope, else None."""
    if _is_task(scope):
        return None
    asset_id = getattr(scope, "asset_id", None)
    if asset_id is not None and (type(asset_id) is not int or asset_id < 0):
        raise TypeError(f"an asset scope's asset_id must be an int, got {asset_id!r}")
    return asset_id


def _is_task(scope: object) -> bool:
    return all(hasattr(scope, f) for f in ("dag_id", "run_id", "task_id"))


def _tasktrail_scope(scope: object) -> Scope:
    """Airflow's scope (core or SDK copy, recognised by its fields) as tasktrail's."""
    if _is_task(scope):
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


def _no_session(asset_id: int) -> Exception:
    return ValueError(
        f"asset scope with asset_id={asset_id} and no session: tasktrail needs Airflow's "
        "database session to find the asset's name and uri"
    )


def _try_number(scope: Scope, session: Session | None) -> int | None:
    """The running try of the scope's task instance, from Airflow's database."""
    if not isinstance(scope, TaskScope) or session is None:
        return None
    found: int | None = session.scalar(_try_query(scope))
    return found


async def _atry_number(scope: Scope, session: AsyncSession | None) -> int | None:
    if not isinstance(scope, TaskScope) or session is None:
        return None
    found: int | None = await session.scalar(_try_query(scope))
    return found


def _try_query(scope: TaskScope) -> Any:
    from airflow.models.taskinstance import TaskInstance
    from sqlalchemy import select

    return select(TaskInstance.try_number).where(
        TaskInstance.dag_id == scope.dag_id,
        TaskInstance.run_id == scope.run_id,
        TaskInstance.task_id == scope.task_id,
        TaskInstance.map_index == scope.map_index,
    )


def _decode(key: str, value: str) -> Any:
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


def _aware(expires_at: datetime | None) -> datetime | None:
    if expires_at is not None and expires_at.tzinfo is None:
        # Airflow computes expiry in UTC on the worker.
        return expires_at.replace(tzinfo=UTC)
    return expires_at


# -- the operations, against an open store or a service ------------------------------------------


def _accessor(store: Store, scope: Scope, try_number: int | None) -> Any:
    if isinstance(scope, TaskScope):
        return store.task_store(
            scope.dag_id,
            scope.run_id,
            scope.task_id,
            scope.map_index,
            try_number,
            actor=ACTOR,
        )
    return store.asset_store(scope.name, scope.uri, actor=ACTOR)


def _remote_accessor(
    remote: Remote, scope: Scope, try_number: int | None
) -> RemoteTaskStore | RemoteAssetStore:
    if isinstance(scope, TaskScope):
        return remote.task_store(
            scope.dag_id, scope.run_id, scope.task_id, scope.map_index, try_number
        )
    return remote.asset_store(scope.name, scope.uri)


async def _get(target: Target, scope: Scope, key: str) -> str | None:
    if not isinstance(target, Store):
        value = await _remote_accessor(target, scope, None).get(check_key(key))
        return None if value is None else json.dumps(value)
    row = await target.read(scope, check_key(key))
    if row is None:
        return None
    value = target.open_value(scope, row)
    return None if value is ERASED else json.dumps(value)


async def _set(
    target: Target,
    scope: Scope,
    key: str,
    value: Any,
    expires_at: datetime | None,
    try_number: int | None,
) -> None:
    encoded = encode_value(key, value, 0)
    if isinstance(scope, AssetScope):
        expires_at = None  # asset entries never expire
    if isinstance(target, Store):
        if await _is_repeat(target, scope, key, encoded, expires_at, try_number):
            return
        accessor = _accessor(target, scope, try_number)
    else:
        if await _is_remote_repeat(target, scope, key, encoded, expires_at, try_number):
            return
        accessor = _remote_accessor(target, scope, try_number)
    if isinstance(scope, AssetScope):
        await accessor.set(key, value)
    elif expires_at is None:
        await accessor.set(key, value, retention=NEVER_EXPIRE)
    else:
        await accessor.set(key, value, expires_at=expires_at)


async def _is_repeat(
    store: Store,
    scope: Scope,
    key: str,
    encoded: bytes,
    expires_at: datetime | None,
    try_number: int | None,
) -> bool:
    """Whether the scope's newest event already sets key to this value, expiry and try."""
    row = await store.read(scope, key)
    if row is None or store.open_json(scope, row) != encoded:
        return False
    if row.expires_at != (None if expires_at is None else to_micros(expires_at)):
        return False
    if row.version != await store.version(scope):
        return False
    events = await store.backend.select_events(
        row.scope_id, EventFilter(after_seq=row.seq - 1, through_seq=row.seq)
    )
    return len(events) == 1 and events[0].try_number == try_number


async def _is_remote_repeat(
    remote: Remote,
    scope: Scope,
    key: str,
    encoded: bytes,
    expires_at: datetime | None,
    try_number: int | None,
) -> bool:
    """`_is_repeat` through the service: the key's entry, then its newest events and the
    scope's version only when the value and expiry match (as they do on a repeat)."""
    accessor = _remote_accessor(remote, scope, None)
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


async def _delete(target: Target, scope: Scope, key: str, try_number: int | None) -> None:
    if isinstance(target, Store):
        await _accessor(target, scope, try_number).delete(key)
    else:
        await _remote_accessor(target, scope, try_number).delete(key)


async def _clear(
    target: Target, scope: Scope, all_map_indices: bool, try_number: int | None
) -> None:
    if isinstance(target, Store):
        accessor = _accessor(target, scope, try_number)
    else:
        accessor = _remote_accessor(target, scope, try_number)
    if isinstance(scope, TaskScope):
        await accessor.clear(all_map_indices)
    else:
        await accessor.clear()


# -- one event loop per process for the sync methods ----------------------------------------------


class _Bridge:
    """An event loop in a daemon thread (behind a blocking portal) and the stores open on it.

    Started at the first call of the process, and again in a forked child, where the parent's
    thread does not exist; closed at interpreter exit, which commits every queued write.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._loop: _Loop | None = None
        # What a forked child inherited from its parent: kept, never closed (there is no thread
        # to close it on).
        self._inherited: list[_Loop] = []

    def call(
        self,
        key: Hashable,
        opener: Callable[[], AbstractAsyncContextManager[Target]],
        operation: Callable[..., Awaitable[T]],
        *args: Any,
    ) -> T:
        """Run operation(target, *args) on the loop, with the target `opener` opens (once per
        key and process)."""
        portal, target = self._open(key, opener)
        return portal.call(operation, target, *args)

    def _open(
        self, key: Hashable, opener: Callable[[], AbstractAsyncContextManager[Target]]
    ) -> tuple[BlockingPortal, Target]:
        with self._lock:
            if self._pid != os.getpid():
                if self._loop is not None:
                    self._inherited.append(self._loop)
                else:
                    atexit.register(self.close)
                self._loop = _Loop()
                self._pid = os.getpid()
            assert self._loop is not None
            return self._loop.portal, self._loop.target(key, opener)

    def close(self) -> None:
        """Close every store and connection and stop the loop; idempotent, and a no-op in a
        forked child."""
        with self._lock:
            loop, self._loop = self._loop, None
            if loop is not None and self._pid != os.getpid():
                self._inherited.append(loop)
                loop = None
            self._pid = None
        if loop is not None:
            loop.close()


class _Loop:
    """One event loop thread with a portal into it, and the stores (or service connections)
    opened on it, by the backend's key."""

    def __init__(self) -> None:
        ready: Future[BlockingPortal] = Future()

        def run() -> None:
            async def serve() -> None:
                async with BlockingPortal() as portal:
                    ready.set_result(portal)
                    await portal.sleep_until_stopped()

            try:
                anyio.run(serve)
            except BaseException as error:
                if not ready.done():
                    ready.set_exception(error)
                raise

        self._thread = threading.Thread(target=run, name="tasktrail-airflow", daemon=True)
        self._thread.start()
        self.portal = ready.result()
        self._targets: dict[Hashable, Target] = {}
        self._opened: list[AbstractContextManager[Target]] = []

    def target(
        self, key: Hashable, opener: Callable[[], AbstractAsyncContextManager[Target]]
    ) -> Target:
        target = self._targets.get(key)
        if target is None:
            opened = self.portal.wrap_async_context_manager(opener())
            target = self._targets[key] = opened.__enter__()
            self._opened.append(opened)
        return target

    def close(self) -> None:
        try:
            while self._opened:
                self._opened.pop().__exit__(None, None, None)
        finally:
            self.portal.call(self.portal.stop)
            self._thread.join()


_BRIDGE: Final = _Bridge()
