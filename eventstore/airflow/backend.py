"""`TasktrailBackend`: Airflow's `[state_store] backend`, writing to tasktrail's event log."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypeVar

try:
    from airflow.state.metastore import MetastoreBackend
except ImportError as e:
    raise ImportError(
        "eventstore.airflow needs Apache Airflow 3.3: pip install 'tasktrail[airflow]'"
    ) from e

from eventstore.airflow import operations as ops
from eventstore.airflow.assets import AssetNames
from eventstore.airflow.loop import PROCESS_LOOP
from eventstore.airflow.mirror import MirrorReport, compare_mirror, expired_keys, projection_rows
from eventstore.airflow.place import Place, async_session, sync_session
from eventstore.airflow.scopes import (
    Writer,
    asset_id_of,
    asset_writer,
    aware,
    decode,
)
from eventstore.airflow.settings import (
    ACTOR,
    MASK,
    MIRROR_MODES,
    MirrorMode,
    check_token,
    configured,
    is_service,
    mirror_setting,
    sensitive_names,
    store_config,
)
from eventstore.airflow.writer import MirrorOp
from eventstore.log.errors import ConfigError
from eventstore.log.scopes import Scope, TaskScope
from eventstore.store import open_store

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import Session

    from eventstore.airflow.operations import Target

__all__ = ["Edit", "TasktrailBackend", "installed_backend"]

T = TypeVar("T")


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
            url, token = configured()
        self.url = url
        self.config = store_config()
        self.token: str | None = None
        if is_service(url):
            self.token = token or os.environ.get("TASKTRAIL_TOKEN") or None
            check_token(self.token)
        self.mirror: MirrorMode = mirror or mirror_setting()
        if self.mirror not in MIRROR_MODES:
            raise ConfigError(
                f"[tasktrail] mirror must be one of {', '.join(MIRROR_MODES)}, got {self.mirror!r}"
            )
        self.sensitive_names = sensitive_names(sensitive_keys)
        self._key = (url, self.config, self.token)
        # What the process loop needs of this backend for a write (ProcessLoop.write).
        self._store = (self._key, self._open, self)
        self._assets = AssetNames()

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
        return PROCESS_LOOP.call(self._key, self._open, operation, *args)

    # -- sync: what Airflow 3.3 calls, from a thread without an event loop --------------------

    def get(self, scope: Any, key: str, *, session: Session | None = None) -> str | None:
        return self._call(ops.read_value, self._scope(scope, session), key)

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
        writer = asset_writer(kind, dag_id, run_id, task_id, map_index)
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
        decoded = decode(key, value)
        with sync_session(session) as opened:
            target = self._scope(scope, opened)
            place = Place.find(opened, scope, target)
            sensitive = self.is_sensitive(key)

            def mirror(sealed: bool) -> MirrorOp:
                text = self._mirrored(decoded, sensitive or sealed)
                return MirrorOp("upsert", place, key, text, writer, expires_at)

            expiry, try_number = aware(expires_at), place.try_number
            args = (target, key, decoded, expiry, try_number, writer.actor, sensitive)
            PROCESS_LOOP.write(self._store, opened, session is None, ops.write_set, args, mirror)

    def delete(self, scope: Any, key: str, *, session: Session | None = None) -> None:
        with sync_session(session) as opened:
            target = self._scope(scope, opened)
            place = Place.find(opened, scope, target, need_run=False)
            change = MirrorOp("delete", place, key)
            args = (target, key, place.try_number, ACTOR)
            owned = session is None
            PROCESS_LOOP.write(self._store, opened, owned, ops.write_delete, args, lambda _: change)

    def clear(
        self, scope: Any, *, all_map_indices: bool = False, session: Session | None = None
    ) -> None:
        with sync_session(session) as opened:
            target = self._scope(scope, opened)
            place = Place.find(opened, scope, target, need_run=False)
            try_number = None if all_map_indices else place.try_number
            change = MirrorOp("clear", place, all_map_indices=all_map_indices)
            args = (target, all_map_indices, try_number, ACTOR)
            owned = session is None
            PROCESS_LOOP.write(self._store, opened, owned, ops.write_clear, args, lambda _: change)

    @staticmethod
    def wait_for_mirror() -> None:
        """Wait until Airflow's tables hold every write this process made so far (the mirror
        writer's queue drained); the paths that read the mirror call it first."""
        PROCESS_LOOP.drain()

    # -- async: native, on the caller's event loop ----------------------------------------------

    async def aget(
        self, scope: Any, key: str, *, session: AsyncSession | None = None
    ) -> str | None:
        target = await self._ascope(scope, session)
        async with self._open() as store:
            return await ops.read_value(store, target, key)

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
        writer = asset_writer(kind, dag_id, run_id, task_id, map_index)
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
        decoded = decode(key, value)
        async with async_session(session) as opened:
            target = await self._ascope(scope, opened)
            place = await Place.afind(opened, scope, target)
            try_number = place.try_number
            sensitive = self.is_sensitive(key)
            async with self._open() as store:
                sealed = await ops.write_set(
                    store,
                    target,
                    key,
                    decoded,
                    aware(expires_at),
                    try_number,
                    writer.actor,
                    sensitive,
                )
            mirrored = self._mirrored(decoded, sensitive or sealed)
            await opened.run_sync(place.upsert, key, mirrored, writer, expires_at)

    async def adelete(self, scope: Any, key: str, *, session: AsyncSession | None = None) -> None:
        async with async_session(session) as opened:
            target = await self._ascope(scope, opened)
            place = await Place.afind(opened, scope, target, need_run=False)
            try_number = place.try_number
            async with self._open() as store:
                await ops.write_delete(store, target, key, try_number, ACTOR)
            await opened.run_sync(place.delete, key)

    async def aclear(
        self, scope: Any, *, all_map_indices: bool = False, session: AsyncSession | None = None
    ) -> None:
        async with async_session(session) as opened:
            target = await self._ascope(scope, opened)
            place = await Place.afind(opened, scope, target, need_run=False)
            try_number = None if all_map_indices else place.try_number
            async with self._open() as store:
                await ops.write_clear(store, target, all_map_indices, try_number, ACTOR)
            await opened.run_sync(place.clear, all_map_indices)

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
        self.wait_for_mirror()
        report = self._call(ops.compact, False)
        ops.log_report(report)
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
        report = self._call(ops.compact, True)
        ops.log_report(report)
        return {"expired": self._call(expired_keys)}

    def check_mirror(
        self,
        *,
        repair: bool = False,
        remove_only: bool = False,
        session: Session | None = None,
    ) -> MirrorReport:
        """Compare Airflow's tables with the projection; with `repair`, make them equal (with
        `remove_only`, only delete the rows of no live key)."""
        self.wait_for_mirror()
        rows, known = self._call(projection_rows)
        with sync_session(session) as opened:
            return compare_mirror(self, opened, rows, repair, remove_only, known)

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
                place = Place(task, None, None if task else asset_id_of(scope))
                row = place.row(session, edit.key)
                if row is None:
                    return  # gone already (a concurrent delete): nothing to record
                text, expires_at, place.dag_run_id = row
                value = decode(edit.key, text)
                sensitive = self.is_sensitive(edit.key)
                sealed = self._call(
                    ops.write_set,
                    target,
                    edit.key,
                    value,
                    aware(expires_at),
                    None,
                    actor,
                    sensitive,
                )
                mirrored = self._mirrored(value, sensitive or sealed)
                if mirrored != text:
                    place.upsert(session, edit.key, mirrored, Writer(actor, "api"), expires_at)
            case "delete":
                assert edit.key is not None
                self._call(ops.write_delete, target, edit.key, None, actor)
            case "clear":
                self._call(ops.write_clear, target, edit.all_map_indices, None, actor)

    def record_clear_on_success(self, scope: TaskScope, *, actor: str) -> None:
        """The clear of a task instance marked successful by hand (`clear_on_success`), which
        Airflow makes in its own table only."""
        self._call(ops.write_clear, scope, False, None, actor)

    # -- scopes ---------------------------------------------------------------------------------

    def _scope(self, scope: object, session: Session | None) -> Scope:
        return self._assets.scope(scope, session)

    async def _ascope(self, scope: object, session: AsyncSession | None) -> Scope:
        return await self._assets.ascope(scope, session)


def installed_backend() -> TasktrailBackend | None:
    """Airflow's configured state store backend, if it is this one (the plugin's edits and
    History tab act only then)."""
    from airflow.state import get_state_backend

    backend = get_state_backend()
    return backend if isinstance(backend, TasktrailBackend) else None
