"""tasktrail's Airflow plugin: Airflow's REST API and UI edits reach the log, and a History tab.

Installed with `tasktrail[airflow]` (entry point `airflow.plugins`), loaded by Airflow's API
server when `[state_store] backend` is `eventstore.airflow.TasktrailBackend`. It adds:

- a root middleware (`EditsReachTheLog`): before a request reads or edits Airflow's state store
  tables (or makes any other write), the backend's queued mirror writes are written
  (read-your-writes). Airflow's public routes of the task and asset state
  store (PUT, PATCH, DELETE of a key; DELETE of the whole store) write Airflow's own table, the
  backend's mirror. Once such a request has succeeded, and before its answer leaves, the middleware
  records the edit in tasktrail's log (`TasktrailBackend.record_edit`) with the actor
  `api:airflow/<user>`. If recording fails, the client gets a 500 naming the reason.
- a listener: a task instance marked successful by hand, with `[state_store] clear_on_success`,
  has its store cleared in Airflow's table by the API server; `on_task_instance_success` (which
  Airflow calls from that same request, with no previous state) clears it in tasktrail too.
- a FastAPI app at `/tasktrail` (`history_app`, in `eventstore.airflow.history`), behind
  Airflow's own authentication (the session cookie of Airflow's UI, or a bearer token) and its
  DAG permissions, serving the History view of a task instance; and an external view that puts
  it on the task instance page as a tab.
  The view is tasktrail's own scope page (the service's static modules, served from the package),
  reading tasktrail's history routes, answered in process as an auditor would see them (sensitive
  values masked).

Why a middleware and a listener: Airflow's REST routes call `_get_db_backend()`, a
`MetastoreBackend` Airflow makes itself, so no backend setting reaches them, and Airflow offers no
hook on the state store. A root middleware sees every such request, with its user, and can hold
the answer until the log has the edit; it reads back the row Airflow wrote, so the value and the
expiry Airflow resolved are recorded exactly. The mark-success clear has a public hook of its own.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from typing import Any, Final
from urllib.parse import parse_qs

import anyio
from airflow.listeners import hookimpl
from airflow.plugins_manager import AirflowPlugin

from eventstore.airflow.backend import Edit, installed_backend
from eventstore.airflow.history import PREFIX, history_app
from eventstore.airflow.loop import PROCESS_LOOP
from eventstore.log.scopes import TaskScope

__all__ = ["EditsReachTheLog", "TasktrailPlugin"]

logger = logging.getLogger("tasktrail.airflow")

# The Airflow user of the request being served, for the listener's events.
_ACTOR: Final = contextvars.ContextVar("tasktrail_airflow_actor", default="api:airflow")

_TASK_STORE: Final = re.compile(
    r"/api/v2/dags/(?P<dag>[^/]+)/dagRuns/(?P<run>[^/]+)/taskInstances/(?P<task>[^/]+)"
    r"/state-store(?:/(?P<key>.+))?$"
)
_ASSET_STORE: Final = re.compile(r"/api/v2/assets/(?P<asset>\d+)/state-store(?:/(?P<key>.+))?$")
_WRITES: Final = frozenset({"PUT", "PATCH", "DELETE", "POST"})


def _edit_of(method: str, path: str, query: str) -> Edit | None:
    """The edit a request to Airflow's state store routes makes, or None for any other."""
    if method not in ("PUT", "PATCH", "DELETE"):
        return None
    params = parse_qs(query)
    task = _TASK_STORE.search(path)
    if task is not None:
        map_index = int(params.get("map_index", ["-1"])[0])
        scope = TaskScope(task["dag"], task["run"], task["task"], map_index)
        key = task["key"]
        if key is None:
            if method != "DELETE":
                return None
            every = params.get("all_map_indices", ["false"])[0].lower() == "true"
            return Edit("clear", task=scope, all_map_indices=every)
        return Edit("delete" if method == "DELETE" else "set", task=scope, key=key)
    asset = _ASSET_STORE.search(path)
    if asset is not None:
        asset_id = int(asset["asset"])
        key = asset["key"]
        if key is None:
            return Edit("clear", asset_id=asset_id) if method == "DELETE" else None
        return Edit("delete" if method == "DELETE" else "set", asset_id=asset_id, key=key)
    return None


async def _actor(scope: dict[str, Any]) -> str:
    """`api:airflow/<user>` for the request's Airflow user (bearer token, else the UI's session
    cookie); `api:airflow` when it names none."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN
    from starlette.requests import Request

    request = Request(scope)
    header = request.headers.get("authorization", "")
    token = header[7:].strip() if header[:7].lower() == "bearer " else ""
    token = token or request.cookies.get(COOKIE_NAME_JWT_TOKEN, "")
    if not token:
        return "api:airflow"
    try:
        user = await get_auth_manager().get_user_from_token(token)
    except Exception:  # Airflow's own auth answers the request; the actor stays generic
        return "api:airflow"
    name = user.get_name() if user is not None else ""
    return f"api:airflow/{name}" if name else "api:airflow"


class EditsReachTheLog:
    """Root ASGI middleware: a successful edit through Airflow's REST API is recorded in
    tasktrail's log before its answer is sent."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        writes = scope["method"] in _WRITES and "/api/v2/" in path
        if (writes or "/state-store" in path) and not PROCESS_LOOP.idle():
            # Read-your-writes: what Airflow reads or edits in its table is what the backend
            # wrote so far, the mirror writer's queue drained.
            await anyio.to_thread.run_sync(PROCESS_LOOP.drain)
        if not writes:
            await self.app(scope, receive, send)
            return
        edit = _edit_of(scope["method"], path, scope.get("query_string", b"").decode("latin-1"))
        actor = await _actor(scope)
        token = _ACTOR.set(actor)
        try:
            if edit is None:
                # Other writes (a task instance marked successful) reach the listener below.
                await self.app(scope, receive, send)
                return
            held: list[dict[str, Any]] = []

            async def hold(message: dict[str, Any]) -> None:
                held.append(message)

            await self.app(scope, receive, hold)
            status = next((m["status"] for m in held if m["type"] == "http.response.start"), 500)
            if 200 <= status < 300:
                try:
                    await anyio.to_thread.run_sync(_record, edit, actor)
                except Exception as error:
                    logger.exception("tasktrail could not record an edit made through Airflow")
                    held = _failure(error)
            for message in held:
                await send(message)
        finally:
            _ACTOR.reset(token)


def _record(edit: Edit, actor: str) -> None:
    backend = installed_backend()
    if backend is None:
        return
    from airflow.utils.session import create_session

    with create_session() as session:
        backend.record_edit(edit, actor=actor, session=session)


def _failure(error: Exception) -> list[dict[str, Any]]:
    body = json.dumps(
        {
            "detail": (
                "Airflow made the edit, but tasktrail could not record it "
                f"({type(error).__name__}: {error}); run `python -m eventstore.airflow mirror "
                "--repair` to put Airflow's table back to what tasktrail holds"
            )
        }
    ).encode()
    return [
        {
            "type": "http.response.start",
            "status": 500,
            "headers": [(b"content-type", b"application/json")],
        },
        {"type": "http.response.body", "body": body},
    ]


# -- the listener: a task instance marked successful by hand ------------------------------------


@hookimpl
def on_task_instance_success(previous_state: Any, task_instance: Any) -> None:
    """Airflow's API server calls this with no previous state when a user marks a task instance
    successful; with clear_on_success it has just cleared the instance's rows in its table."""
    if previous_state is not None:
        return  # a task's own success: the execution API cleared through the backend already
    from airflow.configuration import conf

    if not conf.getboolean("state_store", "clear_on_success", fallback=False):
        return
    backend = installed_backend()
    if backend is None:
        return
    map_index = task_instance.map_index if task_instance.map_index is not None else -1
    scope = TaskScope(task_instance.dag_id, task_instance.run_id, task_instance.task_id, map_index)
    backend.record_clear_on_success(scope, actor=_ACTOR.get())


class TasktrailPlugin(AirflowPlugin):
    """What tasktrail adds to Airflow; see the module's docstring."""

    name = "tasktrail"
    fastapi_root_middlewares = [  # noqa: RUF012 - Airflow reads these class attributes
        {"middleware": EditsReachTheLog, "name": "tasktrail: edits reach the log"}
    ]
    fastapi_apps = [  # noqa: RUF012
        {"app": history_app, "url_prefix": PREFIX, "name": "tasktrail history"}
    ]
    external_views = [  # noqa: RUF012
        {
            "name": "History",
            "href": PREFIX + "/history/{DAG_ID}/{RUN_ID}/{TASK_ID}/{MAP_INDEX}",
            "destination": "task_instance",
            "url_route": "tasktrail-history",
        }
    ]
    listeners = [sys.modules[__name__]]  # noqa: RUF012 - this module's hooks
