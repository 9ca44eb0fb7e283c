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

Airflow's own tables (`task_state_store`, `asset_state_store`) are kept as one more projection
of the log (the mirror): every write through this backend also writes them, in the session
Airflow passes (or one of its own), so Airflow's UI and REST API show what tasks wrote. What the
mirror holds for sensitive keys (by name, as Airflow masks Variables) and for sealed values (an
encrypted store) is the `[tasktrail] mirror` setting: `masked` (the default: the row says
"<masked>"), `values` or `off` (no row). `cleanup()` (`airflow state-store clean`) runs
tasktrail's compaction, then removes the mirror rows whose expiry passed.
`python -m eventstore.airflow mirror [--repair]` checks the mirror against the projection and
puts it right. Edits made through Airflow's REST API and UI reach the log through the plugin in
`eventstore.airflow_plugin`.

Importing `eventstore` never imports this module, nor Airflow.
"""

from __future__ import annotations

import atexit
import base64
import json
import os
import re
import sys
import threading
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Hashable,
    Iterable,
    Iterator,
    Sequence,
)
from concurrent.futures import Future
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    asynccontextmanager,
    contextmanager,
)
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Literal, NamedTuple, TypeAlias, TypeVar

import anyio
import msgspec
from anyio.from_thread import BlockingPortal

from eventstore.backends.base import CurrentRow, EventFilter
from eventstore.config import NEVER_EXPIRE, StoreConfig
from eventstore.crypto import ERASED
from eventstore.errors import ConfigError
from eventstore.events import from_micros, to_micros
from eventstore.scopes import AssetScope, Scope, TaskScope, scope_from_key
from eventstore.store import Store, open_store
from eventstore.values import check_key, decode_value, encode_value

try:
    from airflow.state.metastore import MetastoreBackend
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

__all__ = [
    "ACTOR",
    "MASK",
    "Edit",
    "MirrorReport",
    "TasktrailBackend",
    "store_config",
]

ACTOR: Final = "airflow"
# What the mirror holds, in `masked` mode, for a value tasktrail keeps sensitive or sealed.
MASK: Final = "<masked>"
MirrorMode = Literal["values", "masked", "off"]
MIRROR_MODES: Final = ("values", "masked", "off")

T = TypeVar("T")


def store_config() -> StoreConfig:
    """The store settings the backend uses.

    Airflow lets oversized values through with a warning (`[state_store] max_value_storage_bytes`
    only bounds its public REST API), so the backend sets no size limit of its own.
    """
    return StoreConfig(max_value_bytes=0)


class Writer(NamedTuple):
    """Who a write comes from: the event's actor, and the writer fields of an asset's row."""

    actor: str
    kind: str | None = None  # Airflow's AssetStateStoreWriterKind value
    dag_id: str | None = None
    run_id: str | None = None
    task_id: str | None = None
    map_index: int | None = None


class Edit(NamedTuple):
    """An edit made through Airflow's REST API: a set, delete or clear of a task instance's
    store (`task`, tasktrail's scope) or an asset's (`asset_id`, Airflow's id)."""

    kind: Literal["set", "delete", "clear"]
    task: TaskScope | None = None
    asset_id: int | None = None
    key: str | None = None
    all_map_indices: bool = False


class TasktrailBackend(MetastoreBackend):
    """Airflow's `[state_store] backend`, writing to tasktrail's event log.

    A `MetastoreBackend` by class, so that Airflow treats it as the database-backed backend it
    mirrors into: `airflow state-store clean` runs its `cleanup()`, and asset writes arrive with
    the writer's identity (`set_asset_state_store`). Every method is overridden: the log is the
    truth, Airflow's tables its mirror.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        token: str | None = None,
        mirror: MirrorMode | None = None,
        sensitive_keys: Iterable[str] | None = None,
    ) -> None:
        """Airflow makes the backend with no arguments: the environment names the store.

        Tests may name it: a database URL (embedded), or a service's http(s) URL with a token.
        `mirror` and `sensitive_keys` default to the `[tasktrail]` section of Airflow's config.
        """
        if url is None:
            url, token = _configured()
        self.url = url
        self.config = store_config()
        self.token: str | None = None
        if _is_service(url):
            self.token = token or os.environ.get("TASKTRAIL_TOKEN") or None
            _check_token(self.token)
        self.mirror: MirrorMode = mirror or _mirror_setting()
        if self.mirror not in MIRROR_MODES:
            raise ConfigError(
                f"[tasktrail] mirror must be one of {', '.join(MIRROR_MODES)}, got {self.mirror!r}"
            )
        self.sensitive_names = _sensitive_names(sensitive_keys)
        self._key = (url, self.config, self.token)
        self._assets: dict[int, AssetScope] = {}

    def __repr__(self) -> str:
        return f"<TasktrailBackend {self.url}>"

    def is_sensitive(self, key: str) -> bool:
        """Whether a key's name marks it sensitive, as Airflow's names mark a Variable's."""
        normalized = re.sub(r"\W+", "_", key.strip().lower())
        return any(name in normalized for name in self.sensitive_names)

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
        return self._call(_get, self._scope(scope, session), key)

    def set(
        self,
        scope: Any,
        key: str,
        value: str,
        *,
        expires_at: datetime | None = None,
        session: Session | None = None,
    ) -> None:
        self._write_set(scope, key, value, expires_at, Writer(ACTOR), session)

    def set_asset_state_store(
        self,
        scope: Any,
        key: str,
        value: str,
        *,
        kind: Any,
        dag_id: str | None = None,
        run_id: str | None = None,
        task_id: str | None = None,
        map_index: int | None = None,
        session: Session | None = None,
    ) -> None:
        """An asset write with the writer Airflow names: recorded as the event's actor."""
        writer = _asset_writer(kind, dag_id, run_id, task_id, map_index)
        self._write_set(scope, key, value, None, writer, session)

    def _write_set(
        self,
        scope: Any,
        key: str,
        value: str,
        expires_at: datetime | None,
        writer: Writer,
        session: Session | None,
    ) -> None:
        decoded = _decode(key, value)
        with _sync_session(session) as opened:
            target = self._scope(scope, opened)
            place = _Place.find(opened, scope, target)
            try_number = place.try_number
            sensitive = self.is_sensitive(key)
            sealed = self._call(
                _set,
                target,
                key,
                decoded,
                _aware(expires_at),
                try_number,
                writer.actor,
                sensitive,
            )
            place.upsert(
                opened, key, self._mirrored(decoded, sensitive or sealed), writer, expires_at
            )

    def delete(self, scope: Any, key: str, *, session: Session | None = None) -> None:
        with _sync_session(session) as opened:
            target = self._scope(scope, opened)
            place = _Place.find(opened, scope, target, need_run=False)
            self._call(_delete, target, key, place.try_number, ACTOR)
            place.delete(opened, key)

    def clear(
        self, scope: Any, *, all_map_indices: bool = False, session: Session | None = None
    ) -> None:
        with _sync_session(session) as opened:
            target = self._scope(scope, opened)
            place = _Place.find(opened, scope, target, need_run=False)
            try_number = None if all_map_indices else place.try_number
            self._call(_clear, target, all_map_indices, try_number, ACTOR)
            place.clear(opened, all_map_indices)

    # -- async: native, on the caller's event loop ----------------------------------------------

    async def aget(
        self, scope: Any, key: str, *, session: AsyncSession | None = None
    ) -> str | None:
        target = await self._ascope(scope, session)
        async with self._open() as store:
            return await _get(store, target, key)

    async def aset(
        self,
        scope: Any,
        key: str,
        value: str,
        *,
        expires_at: datetime | None = None,
        session: AsyncSession | None = None,
    ) -> None:
        await self._awrite_set(scope, key, value, expires_at, Writer(ACTOR), session)

    async def aset_asset_state_store(
        self,
        scope: Any,
        key: str,
        value: str,
        *,
        kind: Any,
        dag_id: str | None = None,
        run_id: str | None = None,
        task_id: str | None = None,
        map_index: int | None = None,
        session: AsyncSession | None = None,
    ) -> None:
        writer = _asset_writer(kind, dag_id, run_id, task_id, map_index)
        await self._awrite_set(scope, key, value, None, writer, session)

    async def _awrite_set(
        self,
        scope: Any,
        key: str,
        value: str,
        expires_at: datetime | None,
        writer: Writer,
        session: AsyncSession | None,
    ) -> None:
        decoded = _decode(key, value)
        async with _async_session(session) as opened:
            target = await self._ascope(scope, opened)
            place = await _Place.afind(opened, scope, target)
            try_number = place.try_number
            sensitive = self.is_sensitive(key)
            async with self._open() as store:
                sealed = await _set(
                    store,
                    target,
                    key,
                    decoded,
                    _aware(expires_at),
                    try_number,
                    writer.actor,
                    sensitive,
                )
            mirrored = self._mirrored(decoded, sensitive or sealed)
            await place.aupsert(opened, key, mirrored, writer, expires_at)

    async def adelete(self, scope: Any, key: str, *, session: AsyncSession | None = None) -> None:
        async with _async_session(session) as opened:
            target = await self._ascope(scope, opened)
            place = await _Place.afind(opened, scope, target, need_run=False)
            try_number = place.try_number
            async with self._open() as store:
                await _delete(store, target, key, try_number, ACTOR)
            await place.adelete(opened, key)

    async def aclear(
        self, scope: Any, *, all_map_indices: bool = False, session: AsyncSession | None = None
    ) -> None:
        async with _async_session(session) as opened:
            target = await self._ascope(scope, opened)
            place = await _Place.afind(opened, scope, target, need_run=False)
            try_number = None if all_map_indices else place.try_number
            async with self._open() as store:
                await _clear(store, target, all_map_indices, try_number, ACTOR)
            await place.aclear(opened, all_map_indices)

    # -- the mirror ---------------------------------------------------------------------------

    def _mirrored(self, value: Any, hidden: bool) -> str | None:
        """The text the mirror holds for a value; None: no row (`off` for a hidden value)."""
        if not hidden or self.mirror == "values":
            return json.dumps(value)
        return None if self.mirror == "off" else json.dumps(MASK)

    def cleanup(self) -> None:
        """`airflow state-store clean`: tasktrail's compaction (expired keys leave the log and
        the projection), then Airflow's own pass over the mirror (expired rows leave it), then,
        with the store embedded, the mirror put right against the projection (rows of scopes
        erased with `tasktrail erase`, or compacted from tasktrail's side, leave it; rows that
        differ otherwise are reported, and left to `python -m eventstore.airflow mirror
        --repair`)."""
        report = self._call(_compact, False)
        _log_report(report)
        super().cleanup()
        if self.token is None:
            checked = self.check_mirror(repair=True, remove_only=True)
            if not checked.ok:
                import logging

                logging.getLogger("tasktrail.airflow").info(
                    "tasktrail removed %d rows of no live key from Airflow's state store "
                    "tables; %d missing and %d stale rows are left to "
                    "`python -m eventstore.airflow mirror --repair`",
                    len(checked.extra),
                    len(checked.missing),
                    len(checked.stale),
                )

    def _summary_dry_run(self) -> dict[str, list[Any]]:
        """What `airflow state-store clean --dry-run` lists: the expired keys of task scopes;
        the compaction's own dry run is logged beside it. Nothing changes."""
        report = self._call(_compact, True)
        _log_report(report)
        return {"expired": self._call(_expired_keys)}

    def check_mirror(
        self,
        *,
        repair: bool = False,
        remove_only: bool = False,
        session: Session | None = None,
    ) -> MirrorReport:
        """Compare Airflow's tables with the projection; with `repair`, make them equal (with
        `remove_only`, only delete the rows of no live key)."""
        rows, known = self._call(_projection_rows)
        with _sync_session(session) as opened:
            return _check_mirror(self, opened, rows, repair, remove_only, known)

    # -- edits made through Airflow's REST API and UI ----------------------------------------

    def record_edit(self, edit: Edit, *, actor: str, session: Session) -> None:
        """Append to the log an edit Airflow's REST API has just made to its own table.

        Airflow's routes write its table directly (`task_state_store`, `asset_state_store`);
        the plugin calls this once the request has succeeded, before it answers. A set is read
        back from the row Airflow wrote (its value, and the expiry Airflow resolved), recorded,
        and the row re-mirrored (masked, if the key is sensitive). Edits carry no try: they are
        not fenced, and the next try reads them.
        """
        from airflow.state import AssetScope as AirflowAssetScope

        scope: object = edit.task if edit.task is not None else AirflowAssetScope(edit.asset_id)
        target = self._scope(scope, session)
        match edit.kind:
            case "set":
                assert edit.key is not None
                # The row Airflow wrote names its DagRun: no lookup of the run or the try.
                task = target if isinstance(target, TaskScope) else None
                place = _Place(task, None, None if task else _asset_id(scope))
                row = place.row(session, edit.key)
                if row is None:
                    return  # gone already (a concurrent delete): nothing to record
                text, expires_at, place.dag_run_id = row
                value = _decode(edit.key, text)
                sensitive = self.is_sensitive(edit.key)
                sealed = self._call(
                    _set, target, edit.key, value, _aware(expires_at), None, actor, sensitive
                )
                mirrored = self._mirrored(value, sensitive or sealed)
                if mirrored != text:
                    place.upsert(session, edit.key, mirrored, Writer(actor, "api"), expires_at)
            case "delete":
                assert edit.key is not None
                self._call(_delete, target, edit.key, None, actor)
            case "clear":
                self._call(_clear, target, edit.all_map_indices, None, actor)

    def record_clear_on_success(self, scope: TaskScope, *, actor: str) -> None:
        """The clear of a task instance marked successful by hand (`clear_on_success`), which
        Airflow makes in its own table only."""
        self._call(_clear, scope, False, None, actor)

    # -- scopes ---------------------------------------------------------------------------------

    def _scope(self, scope: object, session: Session | None) -> Scope:
        asset_id = _asset_id(scope)
        if asset_id is None:
            return _tasktrail_scope(scope)
        known = self._assets.get(asset_id)
        if known is None:
            # Looked up once per asset id, in a session of Airflow's own if none was passed.
            from airflow.models.asset import AssetModel
            from sqlalchemy import select

            with _sync_session(session) as opened:
                found = opened.execute(
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
            from airflow.models.asset import AssetModel
            from sqlalchemy import select

            async with _async_session(session) as opened:
                result = await opened.execute(
                    select(AssetModel.name, AssetModel.uri).where(AssetModel.id == asset_id)
                )
                found = result.one_or_none()
            known = self._remember(asset_id, found)
        return known

    def _remember(self, asset_id: int, found: Any) -> AssetScope:
        if found is None:
            raise LookupError(f"Airflow has no asset with id {asset_id}")
        # An asset's name and uri never change under one id.
        scope = self._assets[asset_id] = AssetScope(found[0] or None, found[1] or None)
        return scope


def _asset_writer(
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


def _mirror_setting() -> MirrorMode:
    from airflow.configuration import conf

    mode: MirrorMode = conf.get("tasktrail", "mirror", fallback="masked").strip().lower()
    return mode


def _sensitive_names(extra: Iterable[str] | None) -> frozenset[str]:
    """Airflow's sensitive names, `[core] sensitive_var_conn_names`, `[tasktrail]
    sensitive_keys`, and `extra`: substrings of a normalized key name."""
    from airflow._shared.secrets_masker import DEFAULT_SENSITIVE_FIELDS
    from airflow.configuration import conf

    names = set(DEFAULT_SENSITIVE_FIELDS)
    for configured in (
        conf.get("core", "sensitive_var_conn_names", fallback="") or "",
        conf.get("tasktrail", "sensitive_keys", fallback="") or "",
    ):
        names.update(configured.split(","))
    names.update(extra or ())
    return frozenset(n.strip().lower() for n in names if n.strip())


@contextmanager
def _sync_session(session: Session | None) -> Iterator[Session]:
    """The caller's session, or one of Airflow's own, committed at the end of the block."""
    if session is not None:
        yield session
        return
    from airflow.utils.session import create_session

    with create_session() as opened:
        yield opened


@asynccontextmanager
async def _async_session(session: AsyncSession | None) -> AsyncIterator[AsyncSession]:
    if session is not None:
        yield session
        return
    from airflow.utils.session import create_session_async

    async with create_session_async() as opened:
        yield opened


class _Place:
    """Where a scope's rows live in Airflow's tables: a task instance's (by its DagRun's id) or
    an asset's (by its id). `None` ids: Airflow has no such asset, and the mirror is skipped.
    `try_number`: the running try of the task instance, found with its DagRun."""

    def __init__(
        self,
        task: TaskScope | None,
        dag_run_id: int | None,
        asset_id: int | None,
        try_number: int | None = None,
    ) -> None:
        self.task = task
        self.dag_run_id = dag_run_id
        self.asset_id = asset_id
        self.try_number = try_number

    @classmethod
    def find(
        cls, session: Session, scope: object, target: Scope, *, need_run: bool = True
    ) -> _Place:
        if isinstance(target, TaskScope):
            return cls._task(target, session.execute(_task_query(target)).one_or_none(), need_run)
        asset_id = _asset_id(scope)
        if asset_id is None:
            asset_id = session.scalar(_asset_query(target))
        return cls(None, None, asset_id)

    @classmethod
    async def afind(
        cls, session: AsyncSession, scope: object, target: Scope, *, need_run: bool = True
    ) -> _Place:
        if isinstance(target, TaskScope):
            found = (await session.execute(_task_query(target))).one_or_none()
            return cls._task(target, found, need_run)
        asset_id = _asset_id(scope)
        if asset_id is None:
            asset_id = await session.scalar(_asset_query(target))
        return cls(None, None, asset_id)

    @classmethod
    def _task(cls, target: TaskScope, found: Any, need_run: bool) -> _Place:
        run_id, try_number = (None, None) if found is None else (found[0], found[1])
        if need_run and run_id is None:
            raise _no_dag_run(target)
        return cls(target, run_id, None, try_number)

    def _upsert_statement(
        self,
        dialect: str | None,
        key: str,
        text: str | None,
        writer: Writer,
        expires_at: datetime | None,
    ) -> Any:
        if text is None:
            return self._delete_statement(key)
        from airflow.models.asset_state_store import AssetStateStoreModel
        from airflow.models.task_state_store import TaskStateStoreModel
        from airflow.state.metastore import _build_upsert_stmt

        now = datetime.now(UTC)
        if self.task is not None:
            if self.dag_run_id is None:
                return None
            task = self.task
            values = {
                "dag_run_id": self.dag_run_id,
                "dag_id": task.dag_id,
                "run_id": task.run_id,
                "task_id": task.task_id,
                "map_index": task.map_index,
                "key": key,
                "value": text,
                "updated_at": now,
                "expires_at": expires_at,
            }
            return _build_upsert_stmt(
                dialect,
                TaskStateStoreModel,
                ["dag_run_id", "task_id", "map_index", "key"],
                values,
                {"value": text, "updated_at": now, "expires_at": expires_at},
            )
        if self.asset_id is None:
            return None
        fields = {
            "last_updated_by_kind": writer.kind,
            "last_updated_by_dag_id": writer.dag_id,
            "last_updated_by_run_id": writer.run_id,
            "last_updated_by_task_id": writer.task_id,
            "last_updated_by_map_index": writer.map_index,
        }
        return _build_upsert_stmt(
            dialect,
            AssetStateStoreModel,
            ["asset_id", "key"],
            dict(asset_id=self.asset_id, key=key, value=text, updated_at=now, **fields),
            dict(value=text, updated_at=now, **fields),
        )

    def _delete_statement(self, key: str | None, all_map_indices: bool = False) -> Any:
        from airflow.models.asset_state_store import AssetStateStoreModel
        from airflow.models.task_state_store import TaskStateStoreModel
        from sqlalchemy import delete

        if self.task is not None:
            model: Any = TaskStateStoreModel
            task = self.task
            where = [
                model.dag_id == task.dag_id,
                model.run_id == task.run_id,
                model.task_id == task.task_id,
            ]
            if not all_map_indices:
                where.append(model.map_index == task.map_index)
        elif self.asset_id is not None:
            model = AssetStateStoreModel
            where = [model.asset_id == self.asset_id]
        else:
            return None
        if key is not None:
            where.append(model.key == key)
        return delete(model).where(*where)

    def row(self, session: Session, key: str) -> tuple[str, datetime | None, int | None] | None:
        """The (value, expires_at, dag_run_id) of a key's row in Airflow's table, or None."""
        from airflow.models.asset_state_store import AssetStateStoreModel
        from airflow.models.task_state_store import TaskStateStoreModel
        from sqlalchemy import select

        if self.task is not None:
            t = TaskStateStoreModel
            task = self.task
            found = session.execute(
                select(t.value, t.expires_at, t.dag_run_id).where(
                    t.dag_id == task.dag_id,
                    t.run_id == task.run_id,
                    t.task_id == task.task_id,
                    t.map_index == task.map_index,
                    t.key == key,
                )
            ).one_or_none()
            return None if found is None else (found[0], found[1], found[2])
        a = AssetStateStoreModel
        text = session.scalar(select(a.value).where(a.asset_id == self.asset_id, a.key == key))
        return None if text is None else (text, None, None)

    def upsert(
        self,
        session: Session,
        key: str,
        text: str | None,
        writer: Writer,
        expires_at: datetime | None,
    ) -> None:
        from airflow.utils.sqlalchemy import get_dialect_name

        statement = self._upsert_statement(
            get_dialect_name(session), key, text, writer, _aware(expires_at)
        )
        if statement is not None:
            session.execute(statement)

    def delete(self, session: Session, key: str) -> None:
        statement = self._delete_statement(key)
        if statement is not None:
            session.execute(statement)

    def clear(self, session: Session, all_map_indices: bool) -> None:
        statement = self._delete_statement(None, all_map_indices)
        if statement is not None:
            session.execute(statement)

    async def aupsert(
        self,
        session: AsyncSession,
        key: str,
        text: str | None,
        writer: Writer,
        expires_at: datetime | None,
    ) -> None:
        from airflow.utils.sqlalchemy import get_dialect_name

        statement = self._upsert_statement(
            get_dialect_name(session.sync_session), key, text, writer, _aware(expires_at)
        )
        if statement is not None:
            await session.execute(statement)

    async def adelete(self, session: AsyncSession, key: str) -> None:
        statement = self._delete_statement(key)
        if statement is not None:
            await session.execute(statement)

    async def aclear(self, session: AsyncSession, all_map_indices: bool) -> None:
        statement = self._delete_statement(None, all_map_indices)
        if statement is not None:
            await session.execute(statement)


def _dag_run_query(scope: TaskScope) -> Any:
    from airflow.models.dagrun import DagRun
    from sqlalchemy import select

    return select(DagRun.id).where(DagRun.dag_id == scope.dag_id, DagRun.run_id == scope.run_id)


def _asset_query(scope: Scope) -> Any:
    """The id of the newest of Airflow's assets with the scope's name and uri (those given)."""
    from airflow.models.asset import AssetModel
    from sqlalchemy import select

    assert isinstance(scope, AssetScope)
    query = select(AssetModel.id)
    if scope.name is not None:
        query = query.where(AssetModel.name == scope.name)
    if scope.uri is not None:
        query = query.where(AssetModel.uri == scope.uri)
    return query.order_by(AssetModel.id.desc()).limit(1)


def _no_dag_run(scope: TaskScope) -> ValueError:
    # Airflow's own message, which its execution API turns into a 404.
    return ValueError(f"No DagRun found for dag_id={scope.dag_id!r} run_id={scope.run_id!r}")


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


def _task_query(scope: TaskScope) -> Any:
    """The DagRun's id and the task instance's running try, in one query: (id, try) with no
    task instance yet gives (id, None); no row at all, no DagRun."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance as TI
    from sqlalchemy import and_, select

    return (
        select(DagRun.id, TI.try_number)
        .outerjoin(
            TI,
            and_(
                TI.dag_id == DagRun.dag_id,
                TI.run_id == DagRun.run_id,
                TI.task_id == scope.task_id,
                TI.map_index == scope.map_index,
            ),
        )
        .where(DagRun.dag_id == scope.dag_id, DagRun.run_id == scope.run_id)
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


def _accessor(store: Store, scope: Scope, try_number: int | None, actor: str = ACTOR) -> Any:
    if isinstance(scope, TaskScope):
        return store.task_store(
            scope.dag_id,
            scope.run_id,
            scope.task_id,
            scope.map_index,
            try_number,
            actor=actor,
        )
    return store.asset_store(scope.name, scope.uri, actor=actor)


def _remote_accessor(
    remote: Remote, scope: Scope, try_number: int | None
) -> RemoteTaskStore | RemoteAssetStore:
    """Through a service the actor is the token's (`api:<its name>`), whatever the writer."""
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
    actor: str = ACTOR,
    sensitive: bool = False,
) -> bool:
    """Append the set (unless it repeats the newest event); True if the store seals values."""
    encoded = encode_value(key, value, 0)
    sealed = isinstance(target, Store) and target.vault.encrypting
    if isinstance(scope, AssetScope):
        expires_at = None  # asset entries never expire
    if isinstance(target, Store):
        if await _is_repeat(target, scope, key, encoded, expires_at, try_number):
            return sealed
        accessor = _accessor(target, scope, try_number, actor)
    else:
        if await _is_remote_repeat(target, scope, key, encoded, expires_at, try_number):
            return sealed
        accessor = _remote_accessor(target, scope, try_number)
    if isinstance(scope, AssetScope):
        await accessor.set(key, value, sensitive=sensitive)
    elif expires_at is None:
        await accessor.set(key, value, retention=NEVER_EXPIRE, sensitive=sensitive)
    else:
        await accessor.set(key, value, expires_at=expires_at, sensitive=sensitive)
    return sealed


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


async def _delete(
    target: Target, scope: Scope, key: str, try_number: int | None, actor: str = ACTOR
) -> None:
    if isinstance(target, Store):
        await _accessor(target, scope, try_number, actor).delete(key)
    else:
        await _remote_accessor(target, scope, try_number).delete(key)


async def _clear(
    target: Target,
    scope: Scope,
    all_map_indices: bool,
    try_number: int | None,
    actor: str = ACTOR,
) -> None:
    if isinstance(target, Store):
        accessor = _accessor(target, scope, try_number, actor)
    else:
        accessor = _remote_accessor(target, scope, try_number)
    if isinstance(scope, TaskScope):
        await accessor.clear(all_map_indices)
    else:
        await accessor.clear()


async def _compact(target: Target, dry_run: bool) -> dict[str, Any]:
    """tasktrail's compaction (or its dry run): the report, as JSON fields."""
    if isinstance(target, Store):
        report = await target.compact(dry_run=dry_run)
        answer: dict[str, Any] = msgspec.to_builtins(report)
        return answer
    query = {"dry_run": "true"} if dry_run else {}
    _, content = await target.request("POST", "/api/v1/compact", query=query, body=b"")
    answer = json.loads(content)
    return dict(answer)


def _log_report(report: dict[str, Any]) -> None:
    import logging

    what = "would remove" if report.get("dry_run") else "removed"
    logging.getLogger("tasktrail.airflow").info(
        "tasktrail compaction %s %s expired keys and %s events",
        what,
        report.get("keys_expired"),
        report.get("events_removed"),
    )


async def _projection(store: Store) -> tuple[frozenset[str], list[tuple[Scope, CurrentRow]]]:
    """The scope keys of every scope the log ever had a write for, and every projection row
    with its scope, expired or not."""
    keys = {r.scope_id: r.scope_key for r in await store.backend.select_all_scopes()}
    scopes = {scope_id: scope_from_key(key) for scope_id, key in keys.items()}
    rows = await store.backend.select_all_current()
    return frozenset(keys.values()), [(scopes[row.scope_id], row) for row in rows]


def _expired(row: CurrentRow, now: int) -> bool:
    return row.expires_at is not None and row.expires_at <= now


async def _expired_keys(target: Target) -> list[tuple[str, str, str, int, str]]:
    """(dag_id, run_id, task_id, map_index, key) of every task key whose expiry has passed."""
    if not isinstance(target, Store):
        return []  # the service's compaction report counts them; it does not list them
    now = to_micros(target.now())
    _, rows = await _projection(target)
    return sorted(
        (scope.dag_id, scope.run_id, scope.task_id, scope.map_index, row.key)
        for scope, row in rows
        if _expired(row, now) and isinstance(scope, TaskScope)
    )


class _Current(NamedTuple):
    """A live key of the projection, as the mirror should show it."""

    value: Any
    sensitive: bool
    expires_at: datetime | None
    updated_at: datetime


async def _projection_rows(
    target: Target,
) -> tuple[dict[Scope, dict[str, _Current]], frozenset[str]]:
    """Every live key of the projection, by scope, and the scope keys of every scope the log
    ever had a write for (embedded stores only)."""
    if not isinstance(target, Store):
        raise ConfigError(
            "checking the mirror reads tasktrail's projection directly: run it where the "
            "database is (TASKTRAIL_DB), not through a service"
        )
    from eventstore.crypto import is_sensitive

    now = to_micros(target.now())
    known, rows = await _projection(target)
    found: dict[Scope, dict[str, _Current]] = {}
    for scope, row in rows:
        if _expired(row, now):
            continue
        value = target.open_value(scope, row)
        if value is ERASED:
            continue
        found.setdefault(scope, {})[row.key] = _Current(
            value,
            is_sensitive(row.value) or target.vault.encrypting,
            None if row.expires_at is None else from_micros(row.expires_at),
            from_micros(row.updated_at),
        )
    return found, known


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


def _check_mirror(
    backend: TasktrailBackend,
    session: Session,
    projection: dict[Scope, dict[str, _Current]],
    repair: bool,
    remove_only: bool = False,
    known: frozenset[str] = frozenset(),
) -> MirrorReport:
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
        have[("task", row[0], row[1], row[2], row[3], row[4])] = (row[5], _aware(row[6]))
    a = AssetStateStoreModel
    for row in session.execute(select(a.asset_id, a.key, a.value)):
        have[("asset", row[0], row[1])] = (row[2], None)
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
    ids = {asset_id: scope for scope, asset_id in assets.items()}
    for place, (_, expires_at) in have.items():
        if place in wanted or (expires_at is not None and expires_at <= now):
            continue  # an expired row is `cleanup()`'s to remove
        report.extra.append(_place_text(place))
        if remove_only and _scope_of_place(place, ids) not in known:
            # A scope tasktrail never had: Airflow held the row before tasktrail was its
            # backend. Only an explicit repair removes it.
            continue
        if repair:
            _Place(*_place_of(place)).delete(session, place[-1])
    return report


def _scope_of_place(place: tuple[Any, ...], assets: dict[int, AssetScope]) -> str | None:
    from eventstore.scopes import scope_key

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
        run_id = session.scalar(_dag_run_query(task))
        if run_id is None:
            return  # the DagRun is gone from Airflow: nothing to mirror into
        _Place(task, run_id, None).upsert(session, place[-1], text, Writer(ACTOR), expires_at)
    else:
        _Place(None, None, asset_id).upsert(
            session, place[-1], text, Writer(ACTOR, "api"), expires_at
        )


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


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m eventstore.airflow mirror [--repair] [--json]`, with Airflow's configuration:
    check Airflow's tables against tasktrail's projection, and with --repair make them equal.
    Exit status 0 when they agree (or were repaired), 1 when they differ."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m eventstore.airflow")
    commands = parser.add_subparsers(dest="command", required=True)
    mirror = commands.add_parser("mirror", help="check (and repair) Airflow's tables")
    mirror.add_argument("--repair", action="store_true", help="make the mirror equal")
    mirror.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    report = TasktrailBackend().check_mirror(repair=args.repair)
    if args.json:
        sys.stdout.write(msgspec.json.encode(report).decode() + "\n")
    else:
        print(f"{report.rows_checked} rows in Airflow's tables checked")
        for name in ("missing", "stale", "extra"):
            for place in getattr(report, name):
                print(f"  {name}: {place}")
        if report.ok:
            print("the mirror matches tasktrail's projection")
        elif report.repaired:
            print("repaired: the mirror now matches tasktrail's projection")
    return 0 if report.ok or report.repaired else 1


if __name__ == "__main__":
    sys.exit(main())
