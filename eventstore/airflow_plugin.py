"""tasktrail's Airflow plugin: Airflow's REST API and UI edits reach the log, and a History tab.

Installed with `tasktrail[airflow]` (entry point `airflow.plugins`), loaded by Airflow's API
server when `[state_store] backend` is `eventstore.airflow.TasktrailBackend`. It adds:

- a root middleware (`EditsReachTheLog`): Airflow's public routes of the task and asset state
  store (PUT, PATCH, DELETE of a key; DELETE of the whole store) write Airflow's own table, the
  backend's mirror. Once such a request has succeeded, and before its answer leaves, the middleware
  records the edit in tasktrail's log (`TasktrailBackend.record_edit`) with the actor
  `api:airflow/<user>`. If recording fails, the client gets a 500 naming the reason.
- a listener: a task instance marked successful by hand, with `[state_store] clear_on_success`,
  has its store cleared in Airflow's table by the API server; `on_task_instance_success` (which
  Airflow calls from that same request, with no previous state) clears it in tasktrail too.
- a FastAPI app at `/tasktrail` (`history_app`), behind Airflow's own authentication (the
  session cookie of Airflow's UI, or a bearer token) and its DAG permissions, serving the History
  view of a task instance; and an external view that puts it on the task instance page as a tab.
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
import secrets
import sys
from collections.abc import MutableMapping
from datetime import timedelta
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs

import anyio
from airflow.listeners import hookimpl
from airflow.plugins_manager import AirflowPlugin

# At module level: FastAPI reads the routes' annotations (strings here) from these globals.
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, Response

from eventstore.airflow import Edit, TasktrailBackend
from eventstore.log.scopes import TaskScope

__all__ = ["EditsReachTheLog", "TasktrailPlugin", "history_app"]

logger = logging.getLogger("tasktrail.airflow")

PREFIX: Final = "/tasktrail"
AIRFLOW_STATIC: Final = Path(__file__).parent / "airflow_static"

# The Airflow user of the request being served, for the listener's events.
_ACTOR: Final = contextvars.ContextVar("tasktrail_airflow_actor", default="api:airflow")

_TASK_STORE: Final = re.compile(
    r"/api/v2/dags/(?P<dag>[^/]+)/dagRuns/(?P<run>[^/]+)/taskInstances/(?P<task>[^/]+)"
    r"/state-store(?:/(?P<key>.+))?$"
)
_ASSET_STORE: Final = re.compile(r"/api/v2/assets/(?P<asset>\d+)/state-store(?:/(?P<key>.+))?$")
_WRITES: Final = frozenset({"PUT", "PATCH", "DELETE", "POST"})


def _backend() -> TasktrailBackend | None:
    from airflow.state import get_state_backend

    backend = get_state_backend()
    return backend if isinstance(backend, TasktrailBackend) else None


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
        if scope["type"] != "http" or scope["method"] not in _WRITES:
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if "/api/v2/" not in path:
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
    backend = _backend()
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
    backend = _backend()
    if backend is None:
        return
    map_index = task_instance.map_index if task_instance.map_index is not None else -1
    scope = TaskScope(task_instance.dag_id, task_instance.run_id, task_instance.task_id, map_index)
    backend.record_clear_on_success(scope, actor=_ACTOR.get())


# -- the History view ----------------------------------------------------------------------------


def _make_history_app() -> Any:
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import requires_access_dag
    from starlette.staticfiles import StaticFiles

    from eventstore.service.ui import STATIC_DIR

    app = FastAPI(title="tasktrail history", docs_url=None, redoc_url=None, openapi_url=None)
    can_read = [
        Depends(requires_access_dag(method="GET", access_entity=DagAccessEntity.TASK_INSTANCE))
    ]

    @app.get("/history/{dag_id}/{run_id}/{task_id}/{map_index}", dependencies=can_read)
    async def history_page(
        request: Request, dag_id: str, run_id: str, task_id: str, map_index: str
    ) -> HTMLResponse:
        # An unmapped task instance's tab keeps Airflow's placeholder: "{MAP_INDEX}".
        index = int(map_index) if re.fullmatch(r"-?\d+", map_index) else -1
        scope = {
            "scope": "task",
            "dag_id": dag_id,
            "run_id": run_id,
            "task_id": task_id,
            "map_index": index,
        }
        base = request.scope.get("root_path", "").rstrip("/")
        return HTMLResponse(_PAGE.format(base=base, scope=_script_json(scope)), headers=_HEADERS)

    @app.get("/ui/airflow-history.js")
    async def entry_module() -> FileResponse:
        return FileResponse(
            AIRFLOW_STATIC / "airflow-history.js",
            media_type="text/javascript",
            headers=_HEADERS,
        )

    @app.get("/api/v1/tasks/{dag_id}/{rest:path}", dependencies=can_read)
    async def task_history(request: Request, dag_id: str, rest: str) -> Response:
        if not re.fullmatch(r"[^/]+/[^/]+/-?\d+/(history|tries|state|diff|timeline/.+)", rest):
            raise HTTPException(404, "tasktrail's History view reads a task's history only")
        return await _answer_from_tasktrail(request)

    app.mount("/ui", StaticFiles(directory=STATIC_DIR), name="tasktrail-ui")
    return app


def _script_json(value: Any) -> str:
    # In a <script type="application/json">: "</" must not close the element.
    return json.dumps(value).replace("</", "<\\/")


_HEADERS: Final = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}

_PAGE: Final = """<!doctype html>
<html lang="en" data-base="{base}">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>tasktrail history</title>
  <link rel="stylesheet" href="{base}/ui/style.css">
  <link rel="icon" href="data:,">
  <script type="application/json" id="scope">{scope}</script>
  <script type="module" src="{base}/ui/airflow-history.js"></script>
</head>
<body>
  <header class="bar">
    <span class="brand">tasktrail</span><span id="crumb" class="crumb"></span>
  </header>
  <main id="main"></main>
</body>
</html>
"""


async def _answer_from_tasktrail(request: Any) -> Any:
    """Answer one of tasktrail's history routes in process, as an auditor (sensitive values
    masked), over the backend's database."""
    from fastapi.responses import JSONResponse, Response

    backend = _backend()
    if backend is None:
        return JSONResponse({"detail": "the state store backend is not tasktrail's"}, 404)
    if backend.token is not None:
        return JSONResponse(
            {
                "detail": (
                    "the History view reads tasktrail's database (TASKTRAIL_DB); through a "
                    f"service, open the service's own page: {backend.url}/ui/"
                )
            },
            501,
        )
    import msgspec

    from eventstore.service.app import create_app
    from eventstore.service.auth import make_token

    secret = secrets.token_bytes(32)
    # Read-only: the History view never writes (no schema step, no key made, no secret file).
    config = msgspec.structs.replace(backend.config, read_only=True)
    service = create_app(backend.url, secret=secret, config=config)
    token = make_token(secret, "auditor", ttl=timedelta(minutes=5), name="airflow-history")
    raw: bytes = request.scope.get("raw_path") or request.url.path.encode()
    path = raw.decode("latin-1")
    path = path[path.index("/api/v1/") :]
    scope = {
        **request.scope,
        "path": request.url.path[request.url.path.index("/api/v1/") :],
        "raw_path": path.encode("latin-1"),
        "root_path": "",
        "headers": [
            (b"authorization", f"Bearer {token}".encode()),
            (b"accept", b"application/json"),
        ],
    }
    scope.pop("router", None)
    scope.pop("endpoint", None)
    scope.pop("route", None)
    scope.pop("app", None)
    held: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def hold(message: MutableMapping[str, Any]) -> None:
        held.append(dict(message))

    async with service.router.lifespan_context(service):
        await service(scope, receive, hold)
    start = next(m for m in held if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in held if m["type"] == "http.response.body")
    headers = {k.decode(): v.decode() for k, v in start.get("headers", [])}
    return Response(body, status_code=start["status"], media_type=headers.get("content-type"))


history_app: Final = _make_history_app()


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
